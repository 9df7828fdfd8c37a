#[tokio::main]
async fn main() -> Result<(), delivery::Error> {
    delivery::run().await
}
