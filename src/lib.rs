pub mod links;
pub mod range;
pub mod serve;
