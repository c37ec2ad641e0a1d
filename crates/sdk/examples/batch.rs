//! $ comet topic create sdk-batch --queues 4 --type normal
//! $ comet group create sdk-batch-group
//!
//! Sends ten messages in one batch request and receives all ten back. Exits 0 only if every
//! one arrived. The proxy address comes from `COMET_ENDPOINT` (default `127.0.0.1:8081`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use comet_sdk::{FilterExpression, Message, Producer, SimpleConsumer};

const TOPIC: &str = "sdk-batch";
const GROUP: &str = "sdk-batch-group";

/// Runs the example against `endpoint`; `Ok` only if the whole batch was received.
pub async fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let producer = Producer::builder()
        .endpoints(endpoint)
        .topics([TOPIC])
        .build()
        .await?;
    let consumer = SimpleConsumer::builder(GROUP)
        .endpoints(endpoint)
        .subscribe(TOPIC, FilterExpression::all())
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let batch = (0..10)
        .map(|i| Message::builder(TOPIC).body(format!("item {i}")).build())
        .collect::<Result<Vec<_>, _>>()?;
    let mut waiting: HashSet<String> = producer
        .send_batch(batch)
        .await?
        .iter()
        .map(|r| r.message_id().to_owned())
        .collect();
    println!("sent a batch of {}", waiting.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiting.is_empty() && Instant::now() < deadline {
        for m in consumer.receive(32, Duration::from_secs(15)).await? {
            consumer.ack(&m).await?;
            waiting.remove(m.message_id());
        }
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    if waiting.is_empty() {
        println!("received the whole batch");
        Ok(())
    } else {
        Err(format!("{} messages of the batch did not arrive", waiting.len()).into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("COMET_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    run(&endpoint).await
}
