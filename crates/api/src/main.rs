fn main() {
    platform::service::main("api", api::run);
}
