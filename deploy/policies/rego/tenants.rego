# Tenant policy for the demo's chat route, in Rego (OPA-compatible; evaluated by regopy).
# The input looks like OPA-Envoy's: input.attributes.request.http.*, input.parsed_body,
# plus input.principal (verified by the identity layer) and input.route.
package authz

import rego.v1

default decision := {"allowed": false, "http_status": 403, "reason": "tenant_unknown",
	"message": "this tenant is not known to the service"}

blocked contains tenant if some tenant in data.tenants.blocked

decision := {"allowed": false, "http_status": 403, "reason": "tenant_blocked",
	"message": sprintf("tenant %s is blocked", [input.principal.tenant])} if {
	input.principal.tenant in blocked
}

decision := {"allowed": true, "headers": {"x-authz-tenant-plan": plan}} if {
	not input.principal.tenant in blocked
	plan := object.get(data.tenants.plans, input.principal.tenant, "standard")
}
