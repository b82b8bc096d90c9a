//! `/v1/organization/*`.

mod api_keys;
mod organization;
