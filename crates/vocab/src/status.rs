//! In-body statuses and the batch aggregation rule.
//!
//! Business outcomes travel in-body (`apache.rocketmq.v2.Status`) with gRPC OK. A response
//! with one status per entry (a batch send, a batch ack) also carries an overall status
//! ([`aggregate`]): OK when every entry is OK, the shared status when every entry failed
//! alike, and MULTIPLE_RESULTS otherwise. Only OK and MULTIPLE_RESULTS tell a reader to look
//! at the entries ([`has_entry_statuses`]); any other overall code applies to every entry.

use comet_proto::apache::rocketmq::v2::{Code, Status};

/// A status with the given code and message.
pub fn status(code: Code, message: impl Into<String>) -> Status {
    Status {
        code: code as i32,
        message: message.into(),
    }
}

/// The OK status every successful response carries.
pub fn ok() -> Status {
    status(Code::Ok, "OK")
}

/// Overall status of a response with one status per entry: OK when there are none, the
/// first entry's status when all share its code, MULTIPLE_RESULTS (saying how many failed)
/// otherwise.
pub fn aggregate<'a>(entries: impl IntoIterator<Item = &'a Status>) -> Status {
    let mut first: Option<&Status> = None;
    let mut failed = 0usize;
    let mut total = 0usize;
    let mut uniform = true;
    for s in entries {
        total += 1;
        if s.code != Code::Ok as i32 {
            failed += 1;
        }
        match first {
            None => first = Some(s),
            Some(f) if f.code != s.code => uniform = false,
            Some(_) => {}
        }
    }
    match first {
        None => ok(),
        Some(f) if uniform => f.clone(),
        Some(_) => status(
            Code::MultipleResults,
            format!("{failed} of {total} entries failed; see each entry's status"),
        ),
    }
}

/// Whether an overall code leaves the outcome to each entry's own status (OK and
/// MULTIPLE_RESULTS); any other code failed every entry.
pub fn has_entry_statuses(code: i32) -> bool {
    code == Code::Ok as i32 || code == Code::MultipleResults as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_reports_uniform_or_mixed_outcomes() {
        assert_eq!(aggregate([]), ok());
        assert_eq!(aggregate([&ok(), &ok()]), ok());
        let bad = status(Code::IllegalMessageTag, "tag");
        assert_eq!(aggregate([&bad]), bad);
        assert_eq!(aggregate([&bad, &bad]), bad);
        let mixed = aggregate([&ok(), &bad]);
        assert_eq!(mixed.code, Code::MultipleResults as i32);
        assert_eq!(
            mixed.message,
            "1 of 2 entries failed; see each entry's status"
        );
        let other = status(Code::TooManyRequests, "slow down");
        let mixed = aggregate([&bad, &other, &bad]);
        assert_eq!(
            mixed,
            status(
                Code::MultipleResults,
                "3 of 3 entries failed; see each entry's status"
            )
        );
    }

    #[test]
    fn only_ok_and_multiple_results_defer_to_the_entries() {
        assert!(has_entry_statuses(Code::Ok as i32));
        assert!(has_entry_statuses(Code::MultipleResults as i32));
        assert!(!has_entry_statuses(Code::TooManyRequests as i32));
        assert!(!has_entry_statuses(0));
    }
}
