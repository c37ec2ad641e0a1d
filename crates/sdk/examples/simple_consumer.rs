//! $ comet topic create sdk-simple --queues 4 --type normal
//! $ comet group create sdk-simple-group
//!
//! A simple consumer with an SQL92 filter: sends three messages with a `price` property,
//! receives only those with `price > 10`, postpones one with `change_invisible_duration`,
//! gets it again with a higher delivery attempt, and acknowledges everything. Exits 0 only if
//! exactly the two matching messages arrived and the postponed one came back. The proxy
//! address comes from `COMET_ENDPOINT` (default `127.0.0.1:8081`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use comet_sdk::{FilterExpression, Message, Producer, SimpleConsumer};

const TOPIC: &str = "sdk-simple";
const GROUP: &str = "sdk-simple-group";

/// Runs the example against `endpoint`; `Ok` only if the filter and the redelivery worked.
pub async fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let producer = Producer::builder()
        .endpoints(endpoint)
        .topics([TOPIC])
        .build()
        .await?;
    let consumer = SimpleConsumer::builder(GROUP)
        .endpoints(endpoint)
        .subscribe(TOPIC, FilterExpression::sql("price > 10"))
        .await_duration(Duration::from_secs(2))
        .build()
        .await?;
    let mut matching = HashSet::new();
    for price in [5, 20, 30] {
        let m = Message::builder(TOPIC)
            .property("price", price.to_string())
            .body(format!("item at {price}"))
            .build()?;
        let r = producer.send(m).await?;
        if price > 10 {
            matching.insert(r.message_id().to_owned());
        }
    }
    let mut acked = HashSet::new();
    let mut postponed = None;
    let mut came_back = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (acked.len() < matching.len() || !came_back) && Instant::now() < deadline {
        for mut m in consumer.receive(16, Duration::from_secs(15)).await? {
            if !matching.contains(m.message_id()) {
                return Err(format!("the filter let {} through", m.message_id()).into());
            }
            if postponed.is_none() {
                // Not now: see it again in one second.
                consumer
                    .change_invisible_duration(&mut m, Duration::from_secs(1))
                    .await?;
                postponed = Some(m.message_id().to_owned());
                continue;
            }
            if postponed.as_deref() == Some(m.message_id()) {
                came_back = m.delivery_attempt() > 1;
            }
            consumer.ack(&m).await?;
            acked.insert(m.message_id().to_owned());
        }
    }
    consumer.shutdown().await;
    producer.shutdown().await;
    if acked == matching && came_back {
        println!(
            "received the {} matching messages; the postponed one came back",
            acked.len()
        );
        Ok(())
    } else {
        Err(format!(
            "acked {} of {}, postponed came back: {came_back}",
            acked.len(),
            matching.len()
        )
        .into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::var("COMET_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:8081".into());
    run(&endpoint).await
}
