fn main() {
    platform::service::main("dashboard", dashboard::run);
}
