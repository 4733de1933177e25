//! Paging: one bound for every list Beacon answers, checked in one place.

/// How many rows one page holds: 1 to [`PageSize::MAX`]. Parsing is the only way to
/// get one, so a value of this type is in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

/// A page size out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("page size must be 1..={max}")]
pub struct PageSizeError {
    pub max: u32,
}

impl PageSize {
    /// The largest page of any list (api and analytics alike).
    pub const MAX: u32 = 100;

    /// `requested`, or `default` when absent; refused outside 1..=`MAX`.
    pub fn parse(requested: Option<u32>, default: u32) -> Result<Self, PageSizeError> {
        Self::parse_within(requested, default, Self::MAX)
    }

    /// Like [`parse`](Self::parse) under a deployment's lower bound (`max` is capped
    /// at [`PageSize::MAX`]).
    pub fn parse_within(
        requested: Option<u32>,
        default: u32,
        max: u32,
    ) -> Result<Self, PageSizeError> {
        let max = max.min(Self::MAX);
        match requested.unwrap_or(default) {
            n if (1..=max).contains(&n) => Ok(Self(n)),
            _ => Err(PageSizeError { max }),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// For SQL `LIMIT`.
    pub fn as_i64(self) -> i64 {
        i64::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_bounded_once() {
        assert_eq!(PageSize::parse(None, 25).unwrap().get(), 25);
        assert_eq!(PageSize::parse(Some(100), 25).unwrap().get(), 100);
        assert_eq!(
            PageSize::parse(Some(101), 25),
            Err(PageSizeError { max: 100 })
        );
        assert!(PageSize::parse(Some(0), 25).is_err());
        // A deployment may lower the bound, never raise it.
        assert!(PageSize::parse_within(Some(60), 25, 50).is_err());
        assert!(PageSize::parse_within(Some(101), 25, 1000).is_err());
        assert_eq!(PageSize::parse(Some(7), 25).unwrap().as_i64(), 7);
    }
}
