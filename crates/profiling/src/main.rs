//! `mercato-profiling`: the profiling service on its own (distributed mode).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mercato_platform::service::run_alone("profiling", 8081, mercato_profiling::parts).await
}
