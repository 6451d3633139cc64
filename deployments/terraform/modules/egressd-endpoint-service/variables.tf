# Inputs of the PrivateLink variant: a central egress VPC runs the farm
# (module egressd-farm) and exposes its NLB as a VPC endpoint service that
# spoke VPCs reach through interface endpoints.

variable "name" {
  description = "Name used in the endpoint service's Name tag."
  type        = string
  default     = "egressd"
}

variable "nlb_arns" {
  description = "ARNs of the farm's internal NLB(s): values(module.<farm>.nlb_arns). The endpoint service is available in the AZs those NLBs span; a spoke can create its endpoint only in those AZs (matched by AZ ID)."
  type        = list(string)

  validation {
    condition     = length(var.nlb_arns) > 0
    error_message = "At least one NLB ARN is required."
  }
}

variable "allowed_principals" {
  description = "IAM principal ARNs allowed to create interface endpoints to the service: usually the spoke accounts (arn:aws:iam::123456789012:root) or an organization's roles. \"*\" is refused: it would let any AWS account use the proxy."
  type        = list(string)

  validation {
    condition     = length(var.allowed_principals) > 0 && alltrue([for p in var.allowed_principals : p != "*" && startswith(p, "arn:")])
    error_message = "allowed_principals must list IAM principal ARNs; \"*\" is not allowed."
  }
}

variable "acceptance_required" {
  description = "Whether each new endpoint connection must be accepted by the service owner. Keep true unless allowed_principals is tightly controlled."
  type        = bool
  default     = true
}

variable "private_dns_name" {
  description = "Optional private DNS name of the service (for example proxy.egress.example.com); the domain must be verified through the TXT record in the output private_dns_name_configuration. null: spokes use the endpoint's own DNS names."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to the endpoint service."
  type        = map(string)
  default     = {}
}
