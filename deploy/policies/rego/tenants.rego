# Tenant policy for the demo's chat route, in Rego (OPA-compatible; evaluated by regopy).
# The input looks like OPA-Envoy's: input.attributes.request.http.*, input.parsed_body,
# plus input.principal (verified by the identity layer) and input.route.
# Kept to direct lookups: each rule and data lookup costs rego-cpp ~15-25 µs per request.
package authz

import rego.v1

default decision := {
	"allowed": false, "http_status": 403, "reason": "tenant_unknown",
	"message": "the request has no tenant",
}

decision := {
	"allowed": false, "http_status": 403, "reason": "tenant_blocked",
	"message": "this tenant is blocked",
} if {
	input.principal.tenant in data.tenants.blocked
}

decision := {
	"allowed": true,
	"headers": {"x-authz-tenant-plan": object.get(data.tenants.plans, input.principal.tenant, "standard")},
} if {
	not input.principal.tenant in data.tenants.blocked
}
