//! Dates the KPI routes cannot compute with: refused as bad input (problem+json 400
//! from the api, InvalidArgument from analytics), never a crash of analytics.

use beacon_e2e::procs::ProcStack;
use sqlx::PgPool;
use xtask::seed::demo_tenants;

#[sqlx::test(migrations = false)]
async fn out_of_range_dates_are_bad_requests_not_crashes(admin: PgPool) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let mut stack = ProcStack::start(admin, bin, &[]).await.unwrap();
    let tenant = &demo_tenants("abuse-password-a")[0];
    stack.tenant(tenant).await.unwrap();
    let token = beacon_e2e::password_token(
        &stack.client,
        &stack.url("api"),
        &tenant.viewer_email,
        &tenant.password,
    )
    .await;
    for (from, to) in [
        ("-009999-01-02", "-009999-01-03"),
        ("+010000-01-01", "+010000-01-02"),
        ("1899-12-31", "1900-01-01"),
    ] {
        for route in [
            "overview",
            "kpis/campaigns",
            "kpis/timeseries",
            "kpis/anomalies",
        ] {
            let r = stack
                .client
                .get(format!("{}/v1/{route}", stack.url("api")))
                .query(&[("from", from), ("to", to)])
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let content_type = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(
                status,
                400,
                "{route} from={from}: {}",
                r.text().await.unwrap()
            );
            assert_eq!(
                content_type, "application/problem+json",
                "{route} from={from}"
            );
        }
        assert_eq!(stack.all_running(), Ok(()), "after from={from}");
    }
    // Analytics still answers.
    let r = stack
        .client
        .get(format!("{}/v1/overview", stack.url("api")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
