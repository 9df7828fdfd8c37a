#[tokio::main]
async fn main() -> Result<(), messages::Error> {
    messages::run().await
}
