//! The `mercato` binary in embedded mode, as the README's run command starts it.

use mercato_e2e::{Process, TestDatabase, free_port, walkthrough};

#[tokio::test]
async fn embedded_gateway_serves_the_walkthrough_and_stops_cleanly() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let port = free_port()?;
    let mut gateway = Process::start(
        "mercato",
        &["serve", "--mode", "embedded"],
        port,
        &[("DATABASE_URL", &db.url)],
    )?;
    gateway.ready().await?;

    walkthrough(&gateway.url("")).await?;

    let docs = reqwest::get(gateway.url("/docs")).await?;
    assert!(docs.status().is_success());

    let status = gateway.terminate()?;
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    Ok(())
}
