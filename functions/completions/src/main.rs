#[tokio::main]
async fn main() -> Result<(), completions::Error> {
    completions::run().await
}
