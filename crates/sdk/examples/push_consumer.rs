//! $ comet topic create sdk-push --queues 4 --type normal
//! $ comet group create sdk-push-group --backoff customized:1s
//!
//! A push consumer whose listener fails each message's first delivery: every message comes
//! back (delivery attempt 2) one second later and then succeeds. Exits 0 only if all ten
//! messages were consumed on their second attempt. The proxy address comes from
//! `COMET_ENDPOINT` (default `127.0.0.1:8081`).

use std::collections::HashSet;
use std::time::Duration;

use comet_sdk::{ConsumeResult, FilterExpression, Message, MessageView, Producer, PushConsumer};
use tokio::sync::mpsc;

const TOPIC: &str = "sdk-push";
const GROUP: &str = "sdk-push-group";

/// Runs the example against `endpoint`; `Ok` only if every message was retried and consumed.
pub async fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let producer = Producer::builder()
        .endpoints(endpoint)
        .topics([TOPIC])
        .build()
        .await?;
    let mut waiting = HashSet::new();
    for i in 0..10 {
        let r = producer
            .send(Message::builder(TOPIC).body(format!("job {i}")).build()?)
            .await?;
        waiting.insert(r.message_id().to_owned());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = PushConsumer::builder(GROUP)
        .endpoints(endpoint)
        .subscribe(TOPIC, FilterExpression::all())
        .max_concurrency(4)
        .listener(move |m: MessageView| {
            let tx = tx.clone();
            async move {
                if m.delivery_attempt() == 1 {
                    return ConsumeResult::Failure;
                }
                let _ = tx.send(m.message_id().to_owned());
                ConsumeResult::Success
            }
        })
        .build()
        .await?;
    while !waiting.is_empty() {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(id)) => {
                waiting.remove(&id);
            }
            _ => {
                return Err(
                    format!("{} messages were not consumed within 30 s", waiting.len()).into(),
                );
            }
        }
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    println!("all ten consumed on their second attempt");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("COMET_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    run(&endpoint).await
}
