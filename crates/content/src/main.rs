//! `mercato-content`: the content service on its own (distributed mode).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mercato_platform::service::run_alone("content", 8082, mercato_content::parts).await
}
