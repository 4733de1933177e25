    /// Nothing listens on port 1: the service starts, and is not ready. // @db
    fn unreachable_database() -> DbConfig { // @db
        let mut db = DbConfig::from_env("__role__", "__name__").unwrap(); // @db
        db.host = "127.0.0.1".into(); // @db
        db.port = 1; // @db
        db // @db
    } // @db

    /// Health, readiness (`ready`: the status it must answer) and metrics on the admin port.
    async fn assert_admin_port(port: u16, ready: &str) {
        for (path, status) in [("/healthz", "200"), ("/readyz", ready), ("/metrics", "200")] {
            let answer = get(port, path).await;
            assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {answer}");
        }
    }

    async fn get(port: u16, path: &str) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }
