//! Number formatting for people: thousands separators, money from integer micros.

/// `1234567` → `1,234,567`.
pub fn format_count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Micros → `1,234.57 EUR` (rounded half away from zero to cents, in integers).
pub fn format_money(micros: i64, currency: &str) -> String {
    let cents = (micros.abs() + 5_000) / 10_000 * micros.signum();
    format!(
        "{}.{:02} {currency}",
        format_count(cents / 100),
        (cents % 100).abs()
    )
}

/// A ratio as a percentage with two decimals, or an em dash when undefined.
pub fn format_ratio(r: Option<f64>, percent: bool) -> String {
    match r {
        Some(r) if percent => format!("{:.2}%", r * 100.0),
        Some(r) => format!("{r:.2}×"),
        None => "—".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(format_count(-1000), "-1,000");
        assert_eq!(format_money(1_234_565_000, "EUR"), "1,234.57 EUR");
        assert_eq!(format_money(0, "USD"), "0.00 USD");
        assert_eq!(format_ratio(Some(0.0512), true), "5.12%");
        assert_eq!(format_ratio(None, true), "—");
    }
}
