fn main() {
    platform::service::main("analytics", analytics::run);
}
