variable "region" {
  description = "AWS region of the example VPC."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name prefix of the example's resources (at most 16 characters, see the farm module)."
  type        = string
  default     = "egressd"
}

variable "vpc_cidr" {
  description = "CIDR of the VPC. It is split into per-AZ /20 client subnets (the first 4096-address blocks) and per-AZ /24 egress and public subnets from its upper half. At least a /16."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "vpc_cidr must be an IPv4 CIDR of size /16 or larger."
  }
}

variable "availability_zones" {
  description = "AZs to use, for example [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]: one client subnet, one egress (proxy) subnet, one public subnet, one NAT gateway and one egressd Auto Scaling Group per AZ."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = length(var.availability_zones) > 0 && length(var.availability_zones) <= 8
    error_message = "Between 1 and 8 availability zones."
  }
}

variable "single_nat_gateway" {
  description = "Use one NAT gateway for all AZs (cheaper for tests) instead of one per AZ (production: an AZ outage then never cuts another AZ's egress)."
  type        = bool
  default     = false
}

variable "ami_id" {
  description = "AMI of the proxy instances (Debian 12 or Ubuntu 22.04, matching the package architecture)."
  type        = string
}

variable "instance_type" {
  description = "Instance type of the proxies."
  type        = string
  default     = "c7i.large"
}

variable "package_s3_uri" {
  description = "s3://bucket/key of the egressd .deb (make package, then upload)."
  type        = string
}

variable "config_s3_uri" {
  description = "s3://bucket/key of the farm's egressd.yaml. It must listen on 0.0.0.0 for http, socks5 and admin (the NLB health-checks the admin port) and set timeouts.drain_delay to 15s to match the farm module's default."
  type        = string
}

variable "endpoint_dns_names" {
  description = "DNS names of interface endpoints (PrivateLink) in this VPC that clients reach without the proxy; they go into the clients' NO_PROXY."
  type        = list(string)
  default     = []
}

variable "s3_endpoint_policy" {
  description = "Optional IAM policy JSON for the S3 gateway endpoint. The default (null) allows any bucket, which lets a client copy data to any bucket without passing egressd: restrict it to your organisation's buckets (aws:ResourceOrgID) in production."
  type        = string
  default     = null
}

variable "dynamodb_endpoint_policy" {
  description = "Optional IAM policy JSON for the DynamoDB gateway endpoint; null allows every table (see s3_endpoint_policy)."
  type        = string
  default     = null
}

variable "private_zone_name" {
  description = "Private Route 53 zone created for the VPC; the proxy is published as proxy.<zone>. Names under .internal bypass the proxy in the clients' NO_PROXY, which does not matter for the proxy's own name."
  type        = string
  default     = "egress.internal"
}

variable "flow_log_retention_days" {
  description = "Retention of the VPC flow logs in CloudWatch Logs."
  type        = number
  default     = 90
}

variable "tags" {
  description = "Tags on every resource (provider default_tags)."
  type        = map(string)
  default = {
    Project = "egressd"
  }
}
