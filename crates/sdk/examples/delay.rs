//! $ comet topic create sdk-delay --queues 4 --type delay
//! $ comet group create sdk-delay-group
//!
//! Sends a message to be delivered two seconds later and receives it no earlier than that.
//! Exits 0 only if it arrived after its delivery time. The proxy address comes from
//! `COMET_ENDPOINT` (default `127.0.0.1:8081`).

use std::time::{Duration, Instant, SystemTime};

use comet_sdk::{FilterExpression, Message, Producer, SimpleConsumer};

const TOPIC: &str = "sdk-delay";
const GROUP: &str = "sdk-delay-group";

/// Runs the example against `endpoint`; `Ok` only if the message arrived on time.
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
    let due = SystemTime::now() + Duration::from_secs(2);
    let receipt = producer
        .send(
            Message::builder(TOPIC)
                .delivery_time(due)
                .body("later")
                .build()?,
        )
        .await?;
    println!("sent {}, due in 2 s", receipt.message_id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for m in consumer.receive(16, Duration::from_secs(15)).await? {
            consumer.ack(&m).await?;
            if m.message_id() == receipt.message_id() {
                let early = SystemTime::now() < due;
                consumer.shutdown().await;
                producer.shutdown().await;
                if early {
                    return Err("the delay message arrived before its delivery time".into());
                }
                println!("received it after its delivery time");
                return Ok(());
            }
        }
    }
    Err("the delay message did not arrive within 30 s".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("COMET_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    run(&endpoint).await
}
