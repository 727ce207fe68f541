//! The docker-compose topology as processes: a one-shot migrate, each service binary on its
//! own port, and the gateway in proxy mode in front of them.

use mercato_e2e::{INTERNAL_TOKEN, Process, TestDatabase, free_port, run_once, walkthrough};

#[tokio::test]
async fn proxy_gateway_in_front_of_service_binaries() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let env_db = [("DATABASE_URL", db.url.as_str())];
    run_once("mercato", &["migrate"], &env_db)?;

    let service_env = [
        ("DATABASE_URL", db.url.as_str()),
        ("MERCATO_INTERNAL_TOKEN", INTERNAL_TOKEN),
        ("MERCATO__DATABASE__MIGRATE_ON_START", "false"),
    ];
    let mut services = Vec::new();
    for name in ["mercato-profiling", "mercato-content", "mercato-metrics"] {
        let mut service = Process::start(name, &[], free_port()?, &service_env)?;
        service.ready().await?;
        services.push(service);
    }
    let upstream = |i: usize| format!("http://127.0.0.1:{}", services[i].port);
    let (profiling, content, metrics) = (upstream(0), upstream(1), upstream(2));
    let gateway_env = [
        ("DATABASE_URL", db.url.as_str()),
        ("MERCATO_INTERNAL_TOKEN", INTERNAL_TOKEN),
        ("MERCATO__DATABASE__MIGRATE_ON_START", "false"),
        ("MERCATO__GATEWAY__UPSTREAMS__PROFILING", profiling.as_str()),
        ("MERCATO__GATEWAY__UPSTREAMS__CONTENT", content.as_str()),
        ("MERCATO__GATEWAY__UPSTREAMS__METRICS", metrics.as_str()),
    ];
    let mut gateway = Process::start(
        "mercato",
        &["serve", "--mode", "proxy"],
        free_port()?,
        &gateway_env,
    )?;
    gateway.ready().await?;

    walkthrough(&gateway.url("")).await?;

    // The services answer nobody without a key or the internal token.
    let direct = reqwest::get(services[0].url("/v1/profiling/customers")).await?;
    assert_eq!(direct.status(), reqwest::StatusCode::UNAUTHORIZED);
    Ok(())
}
