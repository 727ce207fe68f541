pub mod tenants;
