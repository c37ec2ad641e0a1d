//! $ comet topic create sdk-normal --queues 4 --type normal
//! $ comet group create sdk-normal-group
//!
//! Sends one tagged message with keys and a property, then receives it back with a simple
//! consumer filtering on the tag, and acknowledges it. Exits 0 only if the message came back.
//! The proxy address comes from `COMET_ENDPOINT` (default `127.0.0.1:8081`).

use std::time::{Duration, Instant};

use comet_sdk::{FilterExpression, Message, Producer, SimpleConsumer};

const TOPIC: &str = "sdk-normal";
const GROUP: &str = "sdk-normal-group";

/// Runs the example against `endpoint`; `Ok` only if the sent message was received.
pub async fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let producer = Producer::builder()
        .endpoints(endpoint)
        .topics([TOPIC])
        .build()
        .await?;
    let consumer = SimpleConsumer::builder(GROUP)
        .endpoints(endpoint)
        .subscribe(TOPIC, FilterExpression::tag("greeting"))
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let message = Message::builder(TOPIC)
        .tag("greeting")
        .keys(["hello-1"])
        .property("lang", "en")
        .body("hello, comet")
        .build()?;
    let receipt = producer.send(message).await?;
    println!(
        "sent {} to queue {}",
        receipt.message_id(),
        receipt.queue_id()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for m in consumer.receive(16, Duration::from_secs(15)).await? {
            consumer.ack(&m).await?;
            if m.message_id() == receipt.message_id() {
                println!("received it back: {:?}", m.body());
                consumer.shutdown().await;
                producer.shutdown().await;
                return Ok(());
            }
        }
    }
    Err("the sent message did not come back within 30 s".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("COMET_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    run(&endpoint).await
}
