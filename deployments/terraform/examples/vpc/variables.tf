variable "region" {
  description = "AWS region of the example VPC."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
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
    condition = try(!strcontains(var.vpc_cidr, ":") && tonumber(split("/", var.vpc_cidr)[1]) <= 16 && anytrue([
      for r in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"] :
      tonumber(split("/", var.vpc_cidr)[1]) >= tonumber(split("/", r)[1]) && cidrhost("${cidrhost(var.vpc_cidr, 0)}/${split("/", r)[1]}", 0) == cidrhost(r, 0)
    ]), false)
    error_message = "vpc_cidr must be a private IPv4 range (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10) of size /16 or larger: the client subnets cut from it are what the farm admits."
  }
}

variable "availability_zones" {
  description = "AZs to use, for example [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"]: one client subnet, one egress (proxy) subnet and one egressd Auto Scaling Group per AZ (and, with egress_mode nat_gateway, one public subnet and one NAT gateway)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]

  validation {
    condition     = length(var.availability_zones) > 0 && length(var.availability_zones) <= 8
    error_message = "Between 1 and 8 availability zones."
  }
}

variable "egress_mode" {
  description = "How the proxies reach the internet. \"public_ip\" (default): the egress subnets route to the internet gateway and each proxy has a public IPv4 address; no NAT gateway and no per-gigabyte NAT charge (docs/farm.md has the cost model). \"elastic_ip\": the same, with addresses from a fixed pool of Elastic IPs (the farm's output egress_public_ips) that partners can allowlist. \"nat_gateway\": a NAT gateway per AZ in a public subnet, for when the proxies must have no public address. The client subnets have no route out in every mode."
  type        = string
  default     = "public_ip"

  validation {
    condition     = contains(["nat_gateway", "public_ip", "elastic_ip"], var.egress_mode)
    error_message = "egress_mode must be nat_gateway, public_ip or elastic_ip."
  }
}

variable "enable_ipv6" {
  description = "Give the VPC an Amazon-provided IPv6 block and the egress subnets a /64 each, with ::/0 through an egress-only internet gateway, so that the proxies reach IPv6 destinations. The client subnets get no IPv6 route."
  type        = bool
  default     = false
}

variable "single_nat_gateway" {
  description = "With egress_mode nat_gateway: use one NAT gateway for all AZs (cheaper for tests) instead of one per AZ (production: an AZ outage then never cuts another AZ's egress)."
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

variable "release" {
  description = "What the farm runs, for example the egressd version and config revision; change it to roll the farm's instances to a new launch template one AZ at a time (the farm module's release)."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", var.release))
    error_message = "release must be 1 to 64 letters, digits, dots, underscores, plus or minus signs."
  }
}

variable "package_s3_uri" {
  description = "s3://bucket/key of the egressd .deb (make release, then upload)."
  type        = string
}

variable "package_sha256" {
  description = "SHA-256 of the .deb, from the SHA256SUMS that make release writes; the proxies refuse to install a package with another checksum."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.package_sha256))
    error_message = "package_sha256 must be 64 lower-case hex digits."
  }
}

variable "alarm_actions" {
  description = "ARNs (SNS topics) notified by the farm's alarms."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.alarm_actions : startswith(a, "arn:")])
    error_message = "alarm_actions must list ARNs."
  }
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

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be one of CloudWatch Logs' retention values (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "tags" {
  description = "Tags on every resource (provider default_tags)."
  type        = map(string)
  default = {
    Project = "egressd"
  }
}
