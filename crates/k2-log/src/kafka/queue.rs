//! librdkafka's consumer queue through its C interface: many records per call.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

/// librdkafka's consumer queue, read many records per call: `BaseConsumer::poll` takes one
/// per call, with two clock reads and an allocation around each, which was a fifth of the
/// reading thread's time.
pub(super) struct ConsumerQueue(std::ptr::NonNull<rdkafka::bindings::rd_kafka_queue_t>);

impl ConsumerQueue {
    pub fn of(consumer: &BaseConsumer) -> Option<Self> {
        // SAFETY: the consumer's handle is live while borrowed; the call returns a new
        // reference to its queue (or null), released in `drop`.
        let queue = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_consumer(consumer.client().native_ptr())
        };
        std::ptr::NonNull::new(queue).map(ConsumerQueue)
    }

    /// Takes up to `into.len()` messages into `into`, waiting at most `wait` for each
    /// one; returns how many. The caller owns (and destroys) each message taken.
    pub fn take(
        &self,
        wait: Duration,
        into: &mut [*mut rdkafka::bindings::rd_kafka_message_t],
    ) -> usize {
        if into.is_empty() {
            return 0;
        }
        // SAFETY: the queue is live (a reference held by `self`); librdkafka writes at most
        // `into.len()` message pointers into `into`.
        let n = unsafe {
            rdkafka::bindings::rd_kafka_consume_batch_queue(
                self.0.as_ptr(),
                wait.as_millis() as i32,
                into.as_mut_ptr(),
                into.len(),
            )
        };
        n.max(0) as usize
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `of`, once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// Whether a consumer error means records are gone (or will never come), rather than a
/// broker being briefly unreachable, which librdkafka recovers from by itself.
pub(super) fn consumer_error_is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::OffsetOutOfRange
            | RDKafkaErrorCode::AutoOffsetReset
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownPartition
    )
}
