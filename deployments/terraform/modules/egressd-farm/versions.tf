terraform {
  # 1.5: check blocks and validation functions (endswith) used by this module.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.80: target_health_state.unhealthy_draining_interval on NLB target
      # groups, security groups on NLBs and dns_record_client_routing_policy.
      version = ">= 5.80.0, < 7.0.0"
    }
  }
}
