//! `mercato-metrics`: the metrics service on its own (distributed mode).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mercato_platform::service::run_alone("metrics", 8083, mercato_metrics::parts).await
}
