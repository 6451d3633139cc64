# Inputs of the egressd farm: one Auto Scaling Group per availability zone
# behind an internal Network Load Balancer. Every variable is described; the
# Go tests in deployments/ fail when one is not.

# ---------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name prefix for every resource (load balancers, Auto Scaling Groups, security groups, IAM). Letters, digits and hyphens, starting with a letter, at most 16 characters so that per-AZ load balancer names stay within AWS's 32-character limit."
  type        = string
  default     = "egressd"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,15}$", var.name))
    error_message = "The name must start with a letter, contain only letters, digits and hyphens, and be at most 16 characters long."
  }
}

variable "vpc_id" {
  description = "ID of the VPC that holds the proxy subnets and the load balancer(s)."
  type        = string
}

variable "subnet_ids_by_az" {
  description = "Proxy (egress) subnet per availability zone, keyed by AZ name, for example { \"eu-west-1a\" = \"subnet-0abc\" }. One Auto Scaling Group is created per entry and the load balancer gets a node in each. The subnets must reach the internet (through a NAT gateway, or with public addresses). The keys must be known at plan time; the values may come from resources."
  type        = map(string)

  validation {
    condition     = length(var.subnet_ids_by_az) > 0
    error_message = "At least one availability zone with a proxy subnet is required."
  }
}

variable "nlb_per_az" {
  description = "false (default): one internal NLB with a node in every AZ of subnet_ids_by_az; with cross-zone load balancing off each node sends only to its own AZ's Auto Scaling Group, and the NLB's DNS drops an AZ that has no healthy proxy. true: a separate internal NLB per AZ (one DNS name per AZ, no DNS failover between them), for operators who want a zone's load balancer to fail alone."
  type        = bool
  default     = false
}

variable "cross_zone_enabled" {
  description = "Cross-zone load balancing on the NLB. Off by default so that egress traffic stays in the client's AZ (no inter-AZ data charges, an AZ outage stays in that AZ). Turn it on only when AZs have very uneven client counts."
  type        = bool
  default     = false
}

variable "dns_client_routing_policy" {
  description = "How Route 53 Resolver answers the NLB's DNS name for clients in the VPC: availability_zone_affinity (default: clients get their own AZ's NLB address, other AZs only when their own has no healthy proxy), partial_availability_zone_affinity, or any_availability_zone."
  type        = string
  default     = "availability_zone_affinity"

  validation {
    condition     = contains(["availability_zone_affinity", "partial_availability_zone_affinity", "any_availability_zone"], var.dns_client_routing_policy)
    error_message = "dns_client_routing_policy must be availability_zone_affinity, partial_availability_zone_affinity or any_availability_zone."
  }
}

variable "deletion_protection" {
  description = "Deletion protection on the load balancer(s). Turn it on in production so that a mistaken destroy cannot cut every client's egress."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------------------
# Who may connect
# ---------------------------------------------------------------------------

variable "client_cidrs" {
  description = "CIDRs of the clients allowed to use the proxy ports (HTTP/CONNECT and SOCKS5). They are admitted by the NLB's security group; the instances admit proxy traffic only from the NLB. 0.0.0.0/0, ::/0 and any other /0 are refused: an open proxy is never intended. For a central egress VPC reached over PrivateLink see privatelink_inbound_rules_enforced. The CIDRs must be known at plan time (literals, or computed from variables), as they key the security group rules."
  type        = list(string)

  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must list at least one valid IPv4 or IPv6 CIDR."
  }

  validation {
    condition     = alltrue([for c in var.client_cidrs : !endswith(c, "/0")])
    error_message = "client_cidrs must not contain 0.0.0.0/0, ::/0 or any other /0: that would make egressd an open proxy."
  }
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the admin port (/metrics, /healthz, /readyz) directly, for example Prometheus scrapers. The NLB's health checks are always admitted through its security group. null (default) admits the VPC's primary CIDR; [] admits only the NLB. No /0 is accepted."
  type        = list(string)
  default     = null

  validation {
    condition     = var.admin_cidrs == null ? true : alltrue([for c in var.admin_cidrs : !endswith(c, "/0")])
    error_message = "admin_cidrs must not contain 0.0.0.0/0, ::/0 or any other /0."
  }
}

variable "privatelink_inbound_rules_enforced" {
  description = "Whether the NLB's security group inbound rules also apply to traffic arriving through a PrivateLink endpoint service (egressd-endpoint-service module). Keep true inside one VPC. In a central egress VPC whose spoke CIDRs overlap or are not known, set false: access is then controlled by the endpoint service's allowed principals and the spokes' endpoint security groups."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# Ports: must match listen.http, listen.socks5 and listen.admin in the config
# ---------------------------------------------------------------------------

variable "http_port" {
  description = "TCP port of egressd's HTTP forward proxy (HTTP and CONNECT); must match the port of listen.http in the config object."
  type        = number
  default     = 3128
}

variable "socks5_port" {
  description = "TCP port of egressd's SOCKS5 listener; must match the port of listen.socks5 in the config object."
  type        = number
  default     = 1080
}

variable "admin_port" {
  description = "TCP port of egressd's admin listener (/metrics, /healthz, /readyz); must match the port of listen.admin in the config object. The NLB health-checks /readyz here."
  type        = number
  default     = 9090

  validation {
    condition     = var.admin_port > 0 && var.admin_port < 65536
    error_message = "admin_port must be a TCP port number."
  }
}

variable "egress_ports" {
  description = "Destination TCP ports the proxies may open to any address (0.0.0.0/0): the ports that the policy's rules allow. Default 80 and 443; add for example 22 when a rule allows SSH tunnels."
  type        = list(number)
  default     = [80, 443]

  validation {
    condition     = length(var.egress_ports) > 0 && alltrue([for p in var.egress_ports : p > 0 && p < 65536])
    error_message = "egress_ports must list TCP port numbers."
  }
}

variable "egress_ipv6" {
  description = "Also allow egress to ::/0 on egress_ports (the proxy subnets need IPv6 and an egress-only internet gateway)."
  type        = bool
  default     = false
}

variable "dns_server_cidrs" {
  description = "CIDRs of DNS servers named in the config's dns.servers, admitted as egress on port 53 (UDP and TCP). Leave empty when egressd uses the VPC resolver, which security groups do not filter."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

variable "ami_id" {
  description = "AMI of the proxy instances: Debian 12+ or Ubuntu 22.04+ with systemd, of the same architecture as the egressd package (amd64 or arm64). The user data installs the AWS CLI if the image lacks it."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the proxies. Network bandwidth matters more than memory; see docs/farm.md for sizing from the benchmark."
  type        = string
  default     = "c7i.large"
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume in GiB."
  type        = number
  default     = 16
}

variable "instances_per_az" {
  description = "Size of each per-AZ Auto Scaling Group. desired is used at creation only (the group's desired capacity is then left to scaling policies)."
  type = object({
    min     = number
    max     = number
    desired = number
  })
  default = {
    min     = 2
    max     = 6
    desired = 2
  }

  validation {
    condition     = var.instances_per_az.min <= var.instances_per_az.desired && var.instances_per_az.desired <= var.instances_per_az.max
    error_message = "instances_per_az must satisfy min <= desired <= max."
  }
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation for target-tracking scaling of each per-AZ group; null disables the scaling policy."
  type        = number
  default     = 60
}

variable "instance_refresh_min_healthy_percentage" {
  description = "Minimum healthy percentage of a per-AZ group during an instance refresh (a new launch template rolls instances one batch at a time, each draining through the lifecycle hook)."
  type        = number
  default     = 50
}

variable "health_check_grace_period_seconds" {
  description = "Seconds after launch before the Auto Scaling Group acts on failed load balancer health checks (covers the user data installing egressd)."
  type        = number
  default     = 300
}

# ---------------------------------------------------------------------------
# Package and config from S3
# ---------------------------------------------------------------------------

variable "package_s3_uri" {
  description = "s3://bucket/key of the egressd .deb built by `make package`. The instance role may read this object only."
  type        = string

  validation {
    condition     = startswith(var.package_s3_uri, "s3://") && endswith(var.package_s3_uri, ".deb")
    error_message = "package_s3_uri must look like s3://bucket/path/egressd_VERSION_ARCH.deb."
  }
}

variable "config_s3_uri" {
  description = "s3://bucket/key of the complete egressd config (egressd.yaml with its policy). It is copied to /etc/egressd/egressd.yaml at boot and re-pulled every policy_sync_interval_seconds; a changed, valid file is swapped in atomically and egressd hot-reloads it. Its listen ports, listen.proxy_protocol and timeouts.drain/drain_delay must match this module's variables."
  type        = string

  validation {
    condition     = startswith(var.config_s3_uri, "s3://") && length(split("/", trimprefix(var.config_s3_uri, "s3://"))) > 1
    error_message = "config_s3_uri must look like s3://bucket/path/egressd.yaml."
  }
}

variable "s3_region" {
  description = "Region of the bucket(s) holding the package and the config; null means the provider's region."
  type        = string
  default     = null
}

variable "policy_sync_interval_seconds" {
  description = "How often each instance re-pulls config_s3_uri (systemd timer egressd-policy-sync.timer). A policy change reaches the whole farm within about this time."
  type        = number
  default     = 60

  validation {
    condition     = var.policy_sync_interval_seconds >= 10
    error_message = "policy_sync_interval_seconds must be at least 10."
  }
}

# ---------------------------------------------------------------------------
# Draining: must match timeouts.drain and timeouts.drain_delay in the config
# ---------------------------------------------------------------------------

variable "drain_seconds" {
  description = "egressd's timeouts.drain in seconds: how long in-flight requests and tunnels get after the listeners close. The target groups' deregistration delay and the termination lifecycle hook are derived from it."
  type        = number
  default     = 30

  validation {
    condition     = var.drain_seconds >= 0 && var.drain_seconds <= 3000
    error_message = "drain_seconds must be between 0 and 3000."
  }
}

variable "drain_delay_seconds" {
  description = "egressd's timeouts.drain_delay in seconds: how long /readyz answers 503 before the listeners close, so that the NLB stops sending new connections. Must be at least health_check_interval_seconds * health_check_unhealthy_threshold (the time the NLB needs to see the 503); the default 15 suits the default 5 s x 2 health checks. Set the same value in the config."
  type        = number
  default     = 15

  validation {
    condition     = var.drain_delay_seconds >= 0 && var.drain_delay_seconds <= 600
    error_message = "drain_delay_seconds must be between 0 and 600."
  }
}

variable "lifecycle_hook_margin_seconds" {
  description = "Extra seconds the termination lifecycle hook waits beyond drain_delay_seconds + drain_seconds before the instance is terminated (covers the on-instance watcher's poll interval and the process exit)."
  type        = number
  default     = 60

  validation {
    condition     = var.lifecycle_hook_margin_seconds >= 15
    error_message = "lifecycle_hook_margin_seconds must be at least 15."
  }
}

variable "health_check_interval_seconds" {
  description = "Interval of the NLB's HTTP health check on /readyz (5 to 300 seconds)."
  type        = number
  default     = 5

  validation {
    condition     = var.health_check_interval_seconds >= 5 && var.health_check_interval_seconds <= 300
    error_message = "health_check_interval_seconds must be between 5 and 300."
  }
}

variable "health_check_healthy_threshold" {
  description = "Consecutive successful /readyz checks before the NLB sends a proxy new connections (2 to 10)."
  type        = number
  default     = 2
}

variable "health_check_unhealthy_threshold" {
  description = "Consecutive failed /readyz checks before the NLB stops sending a proxy new connections (2 to 10)."
  type        = number
  default     = 2
}

variable "proxy_protocol_v2" {
  description = "Send a PROXY protocol v2 header on every proxied connection (target group proxy_protocol_v2). Required behind PrivateLink to see the client address. When true, client IP preservation is turned off, and the config must set listen.proxy_protocol: true and listen.trusted_proxies to the proxy subnets' CIDRs (output trusted_proxies); a mismatch makes every connection fail. Health checks are plain HTTP to the admin port and carry no header."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource that takes tags, and propagated to the instances."
  type        = map(string)
  default     = {}
}
