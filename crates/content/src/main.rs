//! `mercato-content`: the content service on its own (distributed mode).

fn main() -> anyhow::Result<()> {
    mercato_content::inference::settle_thread_count();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(mercato_platform::service::run_alone(
            "content",
            8082,
            mercato_content::parts,
        ))
}
