//! Developer commands behind `cargo xtask`, and the helpers tests share with them.

pub mod access;
pub mod certs;
pub mod seed;
pub mod up;
