//! The OpenAPI 3.1 description of the API, served at `/api/openapi.json` (`openapi.json`
//! beside this file; a test keeps it in step with the routes).

use serde_json::Value;

const DOCUMENT: &str = include_str!("openapi.json");

pub fn document() -> Value {
    serde_json::from_str(DOCUMENT).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    /// Every API route of the router is described, and nothing else.
    #[test]
    fn every_route_is_documented() {
        let source = include_str!("api.rs");
        let mut routes: Vec<&str> = source
            .split(".route(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|route| route.starts_with("/api/"))
            .collect();
        routes.sort_unstable();
        let document = super::document();
        let mut documented: Vec<&str> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        assert_eq!(routes, documented);
    }
}
