//! The baseline every attack is compared with: each service started as its own
//! process, ready, and under its manifest's memory limit before anything happens.

use beacon_e2e::procs::{ProcStack, record};
use sqlx::PgPool;

#[sqlx::test(migrations = false)]
async fn every_service_starts_under_its_memory_limit(admin: PgPool) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let mut stack = ProcStack::start(admin, bin, &[]).await.expect("stack");
    for (service, container) in [
        ("api", "api"),
        ("ingest", "ingest"),
        ("loader", "loader"),
        ("transform", "transform"),
        ("analytics", "analytics"),
        ("dashboard", "dashboard"),
    ] {
        let (peak, limit) = stack.memory_report(service, container).unwrap();
        record("idle", &format!("{service} peak RSS"), peak, limit, "MiB");
        assert!(peak > 0.0, "{service}: no RSS read from /proc");
        assert!(
            peak < limit,
            "{service}: {peak:.1} MiB at idle, limit {limit:.1} MiB"
        );
    }
    assert_eq!(stack.all_running(), Ok(()));
    for service in stack.services.values_mut() {
        service.terminate().await.unwrap();
    }
}
