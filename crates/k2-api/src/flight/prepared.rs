//! The prepared statements of Flight SQL clients: an opaque handle per statement, its
//! text, its parameters' schema, the values bound to them, and the key that made it (a
//! handle is nobody else's). Bounded in number; an idle statement is forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use k2_lake::query::ScalarValue;
use tonic::Status;

/// Statements held at most; beyond, the least recently used goes.
const HELD: usize = 4096;
/// A statement unused this long is forgotten.
const IDLE: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug)]
pub(super) struct Statement {
    pub sql: String,
    /// The answer's schema, as planned when the statement was made.
    pub schema: SchemaRef,
    pub parameters: SchemaRef,
    pub bound: Vec<ScalarValue>,
    owner: String,
    used: Instant,
}

#[derive(Default)]
pub(super) struct Statements(Mutex<HashMap<Vec<u8>, Statement>>);

impl Statements {
    /// Holds a statement of `owner`'s; its handle.
    pub fn add(
        &self,
        sql: String,
        schema: SchemaRef,
        parameters: SchemaRef,
        owner: &str,
    ) -> Vec<u8> {
        let handle = uuid::Uuid::new_v4().as_bytes().to_vec();
        let mut held = self.0.lock().expect("statements lock");
        let now = Instant::now();
        held.retain(|_, s| now.duration_since(s.used) < IDLE);
        if held.len() >= HELD
            && let Some(oldest) = held
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(h, _)| h.clone())
        {
            held.remove(&oldest);
        }
        held.insert(
            handle.clone(),
            Statement {
                sql,
                schema,
                parameters,
                bound: Vec::new(),
                owner: owner.to_string(),
                used: now,
            },
        );
        handle
    }

    /// `owner`'s statement `handle`, marked used.
    pub fn get(&self, handle: &[u8], owner: &str) -> Result<Statement, Status> {
        let mut held = self.0.lock().expect("statements lock");
        match held.get_mut(handle) {
            Some(s) if s.owner == owner => {
                s.used = Instant::now();
                Ok(s.clone())
            }
            _ => Err(Status::not_found(
                "no such prepared statement (closed, idle for 30 minutes, or another key's)",
            )),
        }
    }

    /// Binds `values` to `owner`'s statement `handle`.
    pub fn bind(&self, handle: &[u8], owner: &str, values: Vec<ScalarValue>) -> Result<(), Status> {
        self.get(handle, owner)?;
        if let Some(s) = self.0.lock().expect("statements lock").get_mut(handle) {
            s.bound = values;
        }
        Ok(())
    }

    pub fn close(&self, handle: &[u8], owner: &str) -> Result<(), Status> {
        self.get(handle, owner)?;
        self.0.lock().expect("statements lock").remove(handle);
        Ok(())
    }
}
