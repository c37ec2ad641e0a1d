//! $ comet topic create sdk-fifo --queues 4 --type fifo
//! $ comet group create sdk-fifo-group --fifo
//!
//! Sends five messages of one message group and consumes them with a push consumer of a FIFO
//! group: they arrive one at a time, in the order sent. Exits 0 only if all five arrived in
//! order. The proxy address comes from `COMET_ENDPOINT` (default `127.0.0.1:8081`).

use std::time::Duration;

use comet_sdk::{ConsumeResult, FilterExpression, Message, MessageView, Producer, PushConsumer};
use tokio::sync::mpsc;

const TOPIC: &str = "sdk-fifo";
const GROUP: &str = "sdk-fifo-group";

/// Runs the example against `endpoint`; `Ok` only if the messages arrived in order.
pub async fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let producer = Producer::builder()
        .endpoints(endpoint)
        .topics([TOPIC])
        .build()
        .await?;
    for i in 0..5 {
        let m = Message::builder(TOPIC)
            .message_group("order-42")
            .body(format!("step {i}"))
            .build()?;
        producer.send(m).await?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = PushConsumer::builder(GROUP)
        .endpoints(endpoint)
        .subscribe(TOPIC, FilterExpression::all())
        .listener(move |m: MessageView| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(String::from_utf8_lossy(m.body()).into_owned());
                ConsumeResult::Success
            }
        })
        .build()
        .await?;
    let mut got = Vec::new();
    while got.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(body)) => {
                println!("consumed {body}");
                got.push(body);
            }
            _ => return Err("the FIFO messages did not all arrive within 30 s".into()),
        }
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    let want: Vec<String> = (0..5).map(|i| format!("step {i}")).collect();
    if got == want {
        Ok(())
    } else {
        Err(format!("out of order: {got:?}").into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("COMET_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    run(&endpoint).await
}
