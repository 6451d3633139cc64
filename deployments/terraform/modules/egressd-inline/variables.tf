# Inputs of the egressd in-line gateways: per availability zone, an Auto
# Scaling Group of gateway instances that the client subnets' route tables
# point their default route at. Every variable is described; the Go tests in
# deployments/ fail when one is not, or when README.md does not list it.

# ---------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------

variable "name" {
  description = "Name prefix for every resource (Auto Scaling Groups, security group, IAM) and the value of the egressd-farm tag on the gateways' instances and network interfaces. Letters, digits and hyphens, starting with a letter, at most 16 characters."
  type        = string
  default     = "egressd-inline"

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,15}$", var.name))
    error_message = "The name must start with a letter, contain only letters, digits and hyphens, and be at most 16 characters long."
  }
}

variable "vpc_id" {
  description = "ID of the VPC that holds the gateway subnets and the client subnets."
  type        = string
}

variable "subnet_ids_by_az" {
  description = "Gateway subnet per availability zone, keyed by AZ name, for example { \"eu-west-1a\" = \"subnet-0abc\" }. One Auto Scaling Group of gateways is created per entry. The subnets must reach the internet (a NAT gateway, or the internet gateway with egress_mode public_ip) and must not be client subnets: their own route tables must never point at the gateways. The keys must be known at plan time."
  type        = map(string)

  validation {
    condition     = length(var.subnet_ids_by_az) > 0
    error_message = "At least one availability zone with a gateway subnet is required."
  }
}

variable "client_route_table_ids_by_az" {
  description = "Route tables of the client subnets, keyed by AZ (the same keys as subnet_ids_by_az), for example { \"eu-west-1a\" = [\"rtb-0abc\"] }. The gateways own these tables' default routes (0.0.0.0/0, and ::/0 with ipv6): an AZ's gateway points them at its network interface when it boots, a healthy gateway of another AZ takes them over when that gateway fails, and the gateways' role may change routes in these tables and no others. Do not manage those default routes elsewhere (an aws_route in Terraform would fight the gateways). Until a gateway has booted the tables have no default route: the clients have no egress rather than unfiltered egress."
  type        = map(list(string))

  validation {
    condition     = length(var.client_route_table_ids_by_az) > 0 && alltrue([for ids in values(var.client_route_table_ids_by_az) : length(ids) > 0 && alltrue([for id in ids : can(regex("^rtb-[0-9a-f]{8,17}$", id))])])
    error_message = "client_route_table_ids_by_az must map each AZ to a non-empty list of route table IDs (rtb-...)."
  }
}

variable "gateways_per_az" {
  description = "Gateway instances in each AZ's Auto Scaling Group. One carries all of its AZ's traffic; a second in the same AZ stands by (it takes the AZ's tables when the first fails, without crossing AZs) and takes over at once on a planned replacement."
  type        = number
  default     = 1

  validation {
    condition     = var.gateways_per_az >= 1 && var.gateways_per_az <= 4 && floor(var.gateways_per_az) == var.gateways_per_az
    error_message = "gateways_per_az must be a whole number from 1 to 4."
  }
}

# ---------------------------------------------------------------------------
# Clients and what reaches the gateways
# ---------------------------------------------------------------------------

variable "client_cidrs" {
  description = "CIDRs of the client subnets whose route tables point at the gateways (client_route_table_ids_by_az). The gateways' security group admits their traffic on redirect_ports (and UDP 443, which the gateways refuse at once so that QUIC clients fall back to TCP), and the gateways' nftables rules redirect only their traffic. Only private IPv4 ranges (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10) and IPv6 blocks of /48 or smaller; never the gateway subnets. The CIDRs must be known at plan time."
  type        = list(string)

  validation {
    condition     = length(var.client_cidrs) > 0 && alltrue([for c in var.client_cidrs : can(cidrhost(c, 0))])
    error_message = "client_cidrs must list at least one valid IPv4 or IPv6 CIDR."
  }

  validation {
    condition = alltrue([for c in var.client_cidrs : try(
      strcontains(c, ":")
      ? tonumber(split("/", c)[1]) >= 48
      : anytrue([for r in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"] :
        tonumber(split("/", c)[1]) >= tonumber(split("/", r)[1]) && cidrhost("${cidrhost(c, 0)}/${split("/", r)[1]}", 0) == cidrhost(r, 0)
      ]),
    false)])
    error_message = "client_cidrs must be private IPv4 ranges (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10) or IPv6 blocks of /48 or smaller: the gateways must never redirect the internet's traffic."
  }
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the gateways' admin port (/metrics, /healthz, /readyz), for example Prometheus scrapers. The gateways always reach each other's admin port (the route takeover's health checks). null (default) admits the VPC's primary CIDR; [] admits only the gateways. Only private IPv4 ranges and IPv6 blocks of /48 or smaller. The gateways' nftables rules drop what client_cidrs send to the gateways themselves, admin port included."
  type        = list(string)
  default     = null

  validation {
    condition = var.admin_cidrs == null ? true : alltrue([for c in var.admin_cidrs : try(
      strcontains(c, ":")
      ? tonumber(split("/", c)[1]) >= 48
      : anytrue([for r in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"] :
        tonumber(split("/", c)[1]) >= tonumber(split("/", r)[1]) && cidrhost("${cidrhost(c, 0)}/${split("/", r)[1]}", 0) == cidrhost(r, 0)
      ]),
    false)])
    error_message = "admin_cidrs must be private IPv4 ranges (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10) or IPv6 blocks of /48 or smaller."
  }
}

variable "redirect_ports" {
  description = "TCP ports of the clients' traffic that the gateways hand to egressd's transparent listener (EGRESSD_REDIRECT_PORTS): the config's tls_ports (the SNI decides) and http_ports (each request's Host decides), and other ports its cidrs rules allow. Everything else the clients send through the gateways is dropped."
  type        = list(number)
  default     = [80, 443]

  validation {
    condition     = length(var.redirect_ports) > 0 && alltrue([for p in var.redirect_ports : p > 0 && p < 65536 && floor(p) == p])
    error_message = "redirect_ports must list TCP port numbers."
  }
}

variable "transparent_port" {
  description = "Port of egressd's transparent listener; must match the port of listen.transparent in the config object."
  type        = number
  default     = 3130

  validation {
    condition     = var.transparent_port > 0 && var.transparent_port < 65536
    error_message = "transparent_port must be a TCP port number."
  }
}

variable "admin_port" {
  description = "TCP port of egressd's admin listener (/metrics, /healthz, /readyz); must match the port of listen.admin in the config object. The route takeover checks /readyz here, on this gateway and on its peers."
  type        = number
  default     = 9090

  validation {
    condition     = var.admin_port > 0 && var.admin_port < 65536
    error_message = "admin_port must be a TCP port number."
  }
}

variable "interception" {
  description = "How the gateways hand the clients' connections to egressd: \"redirect\" (default; a NAT to the gateway, egressd reads the original destination with SO_ORIGINAL_DST and needs no capability) or \"tproxy\" (no NAT; the user data gives egressd CAP_NET_RAW for its IP_TRANSPARENT listener)."
  type        = string
  default     = "redirect"

  validation {
    condition     = contains(["redirect", "tproxy"], var.interception)
    error_message = "interception must be redirect or tproxy."
  }
}

variable "ipv6" {
  description = "Route the client subnets' IPv6 too: the gateways take their ::/0 routes, handle IPv6 like IPv4, get an IPv6 address each and may reach ::/0 on egress_ports. The gateway subnets need an IPv6 CIDR and a ::/0 route to an egress-only internet gateway; the client subnets an IPv6 CIDR."
  type        = bool
  default     = false
}

variable "egress_ports" {
  description = "Destination TCP ports the gateways' egressd may open to any address: the ports the policy allows. Default 80 and 443."
  type        = list(number)
  default     = [80, 443]

  validation {
    condition     = length(var.egress_ports) > 0 && alltrue([for p in var.egress_ports : p > 0 && p < 65536])
    error_message = "egress_ports must list TCP port numbers."
  }
}

variable "dns_server_cidrs" {
  description = "CIDRs of DNS servers named in the config's dns.servers, admitted as egress on port 53 (UDP and TCP). Leave empty when egressd uses the VPC resolver, which security groups do not filter. IPv4 /24 or smaller, IPv6 /56 or smaller."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for c in var.dns_server_cidrs : try(
      can(cidrhost(c, 0)) && tonumber(split("/", c)[1]) >= (strcontains(c, ":") ? 56 : 24),
    false)])
    error_message = "dns_server_cidrs must list DNS servers: IPv4 CIDRs of /24 or smaller, IPv6 CIDRs of /56 or smaller."
  }
}

variable "egress_mode" {
  description = "How the gateways reach the internet. \"nat_gateway\" (default): the gateway subnets route 0.0.0.0/0 to a NAT gateway and the gateways get no public address. \"public_ip\": the gateway subnets route 0.0.0.0/0 to the internet gateway and each gateway gets a public IPv4 address; its security group still admits nothing from the internet."
  type        = string
  default     = "nat_gateway"

  validation {
    condition     = contains(["nat_gateway", "public_ip"], var.egress_mode)
    error_message = "egress_mode must be nat_gateway or public_ip."
  }
}

# ---------------------------------------------------------------------------
# Health checks and failover
# ---------------------------------------------------------------------------

variable "health_check_interval_seconds" {
  description = "Seconds between the route takeover's checks: each gateway checks its own egressd, every client route table and the gateways they point at (/readyz) this often. Failover time is derived from it (output failover_detection_seconds)."
  type        = number
  default     = 5

  validation {
    condition     = var.health_check_interval_seconds >= 1 && var.health_check_interval_seconds <= 60
    error_message = "health_check_interval_seconds must be between 1 and 60."
  }
}

variable "health_check_timeout_seconds" {
  description = "Seconds a /readyz check may take before it counts as failed."
  type        = number
  default     = 2

  validation {
    condition     = var.health_check_timeout_seconds >= 1 && var.health_check_timeout_seconds <= 10
    error_message = "health_check_timeout_seconds must be between 1 and 10."
  }
}

variable "health_check_unhealthy_threshold" {
  description = "Failed checks in a row before a healthy gateway takes over the route tables of the gateway that failed them (and before a gateway marks itself unhealthy in its Auto Scaling Group when its own egressd is not ready)."
  type        = number
  default     = 3

  validation {
    condition     = var.health_check_unhealthy_threshold >= 2 && var.health_check_unhealthy_threshold <= 10
    error_message = "health_check_unhealthy_threshold must be between 2 and 10."
  }
}

variable "health_check_grace_period_seconds" {
  description = "Seconds after launch before a gateway whose egressd is not ready marks itself unhealthy (the Auto Scaling Group then replaces it), and the groups' health check grace period (covers the user data installing egressd)."
  type        = number
  default     = 300

  validation {
    condition     = var.health_check_grace_period_seconds >= 60 && var.health_check_grace_period_seconds <= 3600
    error_message = "health_check_grace_period_seconds must be between 60 and 3600."
  }
}

variable "handoff_seconds" {
  description = "How long the termination lifecycle hook holds a gateway that its Auto Scaling Group terminates (scale-in, instance refresh) while its route takeover hands its route tables to a healthy peer, before the instance goes."
  type        = number
  default     = 60

  validation {
    condition     = var.handoff_seconds >= 30 && var.handoff_seconds <= 600
    error_message = "handoff_seconds must be between 30 and 600."
  }
}

# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

variable "ami_id" {
  description = "AMI of the gateways: Debian 12+ or Ubuntu 22.04+ with systemd and nftables, of the same architecture as the egressd package (amd64 or arm64). The user data installs the AWS CLI and nftables if the image lacks them."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type of the gateways. Each carries all of its AZ's traffic: size it for the AZ's peak (docs/farm.md has the sizing from the benchmark)."
  type        = string
  default     = "c7i.large"
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume in GiB."
  type        = number
  default     = 16

  validation {
    condition     = var.root_volume_size_gb >= 8 && var.root_volume_size_gb <= 1024
    error_message = "root_volume_size_gb must be between 8 and 1024."
  }
}

variable "ebs_kms_key_arn" {
  description = "ARN of a customer managed KMS key that encrypts the root volumes. null (default) uses the account's default EBS key (aws/ebs); the key policy must let the Auto Scaling service-linked role use the key."
  type        = string
  default     = null

  validation {
    condition     = var.ebs_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+$", var.ebs_kms_key_arn))
    error_message = "ebs_kms_key_arn must be a KMS key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "detailed_monitoring" {
  description = "EC2 detailed monitoring (1-minute metrics) on the gateways."
  type        = bool
  default     = true
}

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore to the gateways' role, for Session Manager shells without SSH or an open port. Off by default."
  type        = bool
  default     = false
}

variable "iam_permissions_boundary_arn" {
  description = "ARN of an IAM policy set as the permissions boundary of the gateways' role, when the organisation requires one on every role. null: none."
  type        = string
  default     = null

  validation {
    condition     = var.iam_permissions_boundary_arn == null ? true : can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/.+$", var.iam_permissions_boundary_arn))
    error_message = "iam_permissions_boundary_arn must be an IAM policy ARN (arn:aws:iam::ACCOUNT:policy/NAME)."
  }
}

# ---------------------------------------------------------------------------
# Package, config and releases
# ---------------------------------------------------------------------------

variable "release" {
  description = "Label of what the gateways run, for example the egressd version and the config revision. It is written into the launch template; any change of the template (this label, the AMI, the package) replaces the gateways by an instance refresh per AZ: the replacement boots next to the old gateway, the old one hands its route tables over when it is terminated, and a replacement whose egressd never becomes ready marks itself unhealthy, which rolls the refresh back."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", var.release))
    error_message = "release must be 1 to 64 letters, digits, dots, underscores, plus or minus signs, starting with a letter or digit."
  }
}

variable "package_s3_uri" {
  description = "s3://bucket/key of the egressd .deb built by `make package`. The gateways' role may read this object only (besides the config and checksums)."
  type        = string

  validation {
    condition     = startswith(var.package_s3_uri, "s3://") && endswith(var.package_s3_uri, ".deb")
    error_message = "package_s3_uri must look like s3://bucket/path/egressd_VERSION_ARCH.deb."
  }
}

variable "package_sha256" {
  description = "SHA-256 of the .deb at package_s3_uri (64 hex digits). The user data refuses to install a package whose checksum differs. Set it, or package_sha256sums_s3_uri, or both."
  type        = string
  default     = null

  validation {
    condition     = var.package_sha256 == null ? true : can(regex("^[0-9a-f]{64}$", var.package_sha256))
    error_message = "package_sha256 must be 64 lower-case hex digits."
  }
}

variable "package_sha256sums_s3_uri" {
  description = "s3://bucket/key of the SHA256SUMS file published with the package (`make release`); the user data refuses to install on a mismatch or when the package's name is missing."
  type        = string
  default     = null

  validation {
    condition     = var.package_sha256sums_s3_uri == null ? true : startswith(var.package_sha256sums_s3_uri, "s3://") && length(split("/", trimprefix(var.package_sha256sums_s3_uri, "s3://"))) > 1
    error_message = "package_sha256sums_s3_uri must look like s3://bucket/path/SHA256SUMS."
  }
}

variable "config_s3_uri" {
  description = "s3://bucket/key of the complete egressd config, copied to /etc/egressd/egressd.yaml at boot and re-pulled every policy_sync_interval_seconds. It must set listen.transparent on transparent_port and listen.admin on admin_port."
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
  description = "How often each gateway re-pulls config_s3_uri (systemd timer egressd-policy-sync.timer)."
  type        = number
  default     = 60

  validation {
    condition     = var.policy_sync_interval_seconds >= 10
    error_message = "policy_sync_interval_seconds must be at least 10."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags, and propagated to the instances."
  type        = map(string)
  default     = {}
}
