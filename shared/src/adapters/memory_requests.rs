//! The in-memory [`RequestStore`]: notify requests in a map, bounded (the oldest finished
//! requests are evicted first).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::delivery::StoreError;
use crate::notify::{CreatedRequest, FanOut, NotifyRequest, RequestStore};

/// How many requests the memory store keeps by default.
pub const DEFAULT_REQUEST_CAPACITY: usize = 10_000;

pub struct MemoryRequestStore {
    requests: Mutex<HashMap<String, NotifyRequest>>,
    capacity: usize,
}

impl Default for MemoryRequestStore {
    fn default() -> Self {
        MemoryRequestStore {
            requests: Mutex::new(HashMap::new()),
            capacity: DEFAULT_REQUEST_CAPACITY,
        }
    }
}

impl MemoryRequestStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NotifyRequest>> {
        // Every write is one insert or field update: a poisoned map is still consistent.
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl RequestStore for MemoryRequestStore {
    async fn create(&self, request: &NotifyRequest) -> Result<CreatedRequest, StoreError> {
        let mut requests = self.lock();
        if let Some(existing) = requests.get(&request.id) {
            return Ok(CreatedRequest::Existing(Box::new(existing.clone())));
        }
        if requests.len() >= self.capacity {
            let oldest_done = requests
                .values()
                .filter(|r| r.fan_out.done)
                .min_by_key(|r| r.created_at)
                .map(|r| r.id.clone());
            match oldest_done {
                Some(id) => {
                    requests.remove(&id);
                }
                None => {
                    return Err(StoreError::Full(format!(
                        "{} notify requests still fanning out",
                        requests.len()
                    )));
                }
            }
        }
        requests.insert(request.id.clone(), request.clone());
        Ok(CreatedRequest::New)
    }

    async fn get(&self, id: &str) -> Result<Option<NotifyRequest>, StoreError> {
        Ok(self.lock().get(id).cloned())
    }

    async fn save_fan_out(&self, id: &str, fan_out: &FanOut) -> Result<(), StoreError> {
        match self.lock().get_mut(id) {
            Some(request) => {
                request.fan_out = fan_out.clone();
                Ok(())
            }
            None => Err(StoreError::Unavailable(format!(
                "notify request {id} is not stored"
            ))),
        }
    }
}
