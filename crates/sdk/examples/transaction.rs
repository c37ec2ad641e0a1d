//! $ comet topic create sdk-tx --queues 4 --type transaction
//! $ comet group create sdk-tx-group
//!
//! Sends a half message in a transaction and commits it; a consumer then receives it. The
//! checker answers the server's check-back for transactions left open (commit here). Exits 0
//! only if the committed message arrived. The proxy address comes from `COMET_ENDPOINT`
//! (default `127.0.0.1:8081`).

use std::time::{Duration, Instant};

use comet_sdk::{
    FilterExpression, Message, MessageView, Producer, SimpleConsumer, TransactionResolution,
};

const TOPIC: &str = "sdk-tx";
const GROUP: &str = "sdk-tx-group";

/// Runs the example against `endpoint`; `Ok` only if the committed message was received.
pub async fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let producer = Producer::builder()
        .endpoints(endpoint)
        .topics([TOPIC])
        .transaction_checker(|m: MessageView| async move {
            println!("server asks about {}: commit", m.message_id());
            TransactionResolution::Commit
        })
        .build()
        .await?;
    let consumer = SimpleConsumer::builder(GROUP)
        .endpoints(endpoint)
        .subscribe(TOPIC, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let tx = producer.begin_transaction()?;
    let receipt = tx
        .send(Message::builder(TOPIC).body("debit 10").build()?)
        .await?;
    tx.commit().await?;
    println!("committed {}", receipt.message_id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for m in consumer.receive(16, Duration::from_secs(15)).await? {
            consumer.ack(&m).await?;
            if m.message_id() == receipt.message_id() {
                println!("received the committed message");
                consumer.shutdown().await;
                producer.shutdown().await;
                return Ok(());
            }
        }
    }
    Err("the committed message did not arrive within 30 s".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("COMET_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    run(&endpoint).await
}
