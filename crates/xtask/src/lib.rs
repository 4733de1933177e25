//! Developer commands behind `cargo xtask`, and the helpers tests share with them.
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool talks to its user on stdout"
)]

pub mod access;
pub mod analyst;
pub mod bench;
pub mod certs;
pub mod mutants;
pub mod nca;
pub mod new_product;
pub mod new_service;
pub mod private_file;
pub mod release;
pub mod scratch;
pub mod secrets;
pub mod seed;
pub mod up;
