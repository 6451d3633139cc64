terraform {
  # 1.5: check blocks and validation functions (endswith) used by this module.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.0: data.aws_region's region attribute (name is deprecated), on top
      # of 5.80's target_health_state.unhealthy_draining_interval, security
      # groups on NLBs and dns_record_client_routing_policy.
      version = ">= 6.0.0, < 7.0.0"
    }
  }
}
