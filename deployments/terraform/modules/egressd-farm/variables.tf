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
  description = "CIDRs of the clients allowed to use the proxy ports (HTTP/CONNECT and SOCKS5). They are admitted by the NLB's security group; the instances admit proxy traffic only from the NLB. Only private IPv4 ranges (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 or smaller blocks inside them) and IPv6 blocks of /48 or smaller are accepted: 0.0.0.0/0, ::/0, 0.0.0.0/1 and any public IPv4 range are refused, as an open proxy is never intended. For a central egress VPC reached over PrivateLink see privatelink_inbound_rules_enforced. The CIDRs must be known at plan time (literals, or computed from variables), as they key the security group rules."
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
    error_message = "client_cidrs must be private IPv4 ranges (inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10) or IPv6 blocks of /48 or smaller: no /0, no 0.0.0.0/1 halves, no public IPv4 range (that would make egressd an open proxy)."
  }
}

variable "admin_cidrs" {
  description = "CIDRs allowed to reach the admin port (/metrics, /healthz, /readyz) directly, for example Prometheus scrapers. The NLB's health checks are always admitted through its security group. null (default) admits the VPC's primary CIDR; [] admits only the NLB. Like client_cidrs, only private IPv4 ranges and IPv6 blocks of /48 or smaller are accepted: with egress_mode public_ip or elastic_ip the instances have public addresses, and the admin port must never face the internet."
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
  description = "Also reach IPv6 destinations: egress to ::/0 on egress_ports, and one IPv6 address per instance. The proxy subnets need an IPv6 CIDR and a ::/0 route to an egress-only internet gateway (the example VPC's enable_ipv6 does both)."
  type        = bool
  default     = false
}

variable "dns_server_cidrs" {
  description = "CIDRs of DNS servers named in the config's dns.servers, admitted as egress on port 53 (UDP and TCP). Leave empty when egressd uses the VPC resolver, which security groups do not filter. Each entry is a server or a small block of them: IPv4 /24 or smaller, IPv6 /56 or smaller."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for c in var.dns_server_cidrs : try(
      can(cidrhost(c, 0)) && tonumber(split("/", c)[1]) >= (strcontains(c, ":") ? 56 : 24),
    false)])
    error_message = "dns_server_cidrs must list DNS servers: IPv4 CIDRs of /24 or smaller, IPv6 CIDRs of /56 or smaller."
  }
}

# ---------------------------------------------------------------------------
# How the proxies reach the internet
# ---------------------------------------------------------------------------

variable "egress_mode" {
  description = "How the proxies reach the internet. \"nat_gateway\" (default): the proxy subnets route 0.0.0.0/0 to a NAT gateway (or another egress appliance) and the instances get no public address. \"public_ip\": the proxy subnets route 0.0.0.0/0 to the internet gateway and each instance gets a public IPv4 address at launch; no NAT gateway processing charge (docs/farm.md has the cost model). \"elastic_ip\": like public_ip, but each instance claims a free address from this module's pool of Elastic IPs at boot and releases it at shutdown, so partners can allowlist a fixed set of egress addresses (output egress_public_ips). In every mode the security groups admit only the NLB and admin_cidrs: a public address takes no inbound connection."
  type        = string
  default     = "nat_gateway"

  validation {
    condition     = contains(["nat_gateway", "public_ip", "elastic_ip"], var.egress_mode)
    error_message = "egress_mode must be nat_gateway, public_ip or elastic_ip."
  }
}

variable "elastic_ip_pool_size" {
  description = "Number of Elastic IPs in the pool when egress_mode is elastic_ip. null (default) allocates one and a half times the farm's largest size (the sum of instances_per_az.max), so that an instance refresh, which launches replacements before it terminates, finds free addresses. Each address costs the public IPv4 hourly charge whether in use or not. An instance that finds no free address does not start egressd and fails its health checks."
  type        = number
  default     = null

  validation {
    condition     = var.elastic_ip_pool_size == null ? true : var.elastic_ip_pool_size >= 1 && var.elastic_ip_pool_size <= 200 && floor(var.elastic_ip_pool_size) == var.elastic_ip_pool_size
    error_message = "elastic_ip_pool_size must be a whole number between 1 and 200, or null."
  }
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

  validation {
    condition     = var.root_volume_size_gb >= 8 && var.root_volume_size_gb <= 1024
    error_message = "root_volume_size_gb must be between 8 and 1024."
  }
}

variable "ebs_kms_key_arn" {
  description = "ARN of a customer managed KMS key that encrypts the root volumes. null (default) uses the account's default EBS key (aws/ebs). The key policy must let the Auto Scaling service-linked role (AWSServiceRoleForAutoScaling) use the key (kms:CreateGrant, kms:GenerateDataKey*, kms:Decrypt, kms:ReEncrypt*, kms:DescribeKey), or launches fail."
  type        = string
  default     = null

  validation {
    condition     = var.ebs_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/[A-Za-z0-9/_-]+$", var.ebs_kms_key_arn))
    error_message = "ebs_kms_key_arn must be a KMS key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "detailed_monitoring" {
  description = "EC2 detailed monitoring (1-minute CPU and network metrics) on the proxies, so that scaling and the alarms react within minutes rather than five-minute periods. It is charged per metric."
  type        = bool
  default     = true
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
  description = "Target average CPU utilisation for target-tracking scaling of each per-AZ group; null disables the CPU scaling policy."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_target_percent == null ? true : var.cpu_target_percent >= 10 && var.cpu_target_percent <= 90
    error_message = "cpu_target_percent must be between 10 and 90, or null."
  }
}

variable "network_out_target_gbps" {
  description = "Target average network output per instance, in Gbit/s, for a second target-tracking policy on each per-AZ group (ASGAverageNetworkOut): on small instances the network bandwidth runs out before the CPU (docs/farm.md). The group scales out when either policy asks. Set it below the instance type's baseline bandwidth (c7i.large: 0.781 Gbit/s); null disables it."
  type        = number
  default     = 0.5

  validation {
    condition     = var.network_out_target_gbps == null ? true : var.network_out_target_gbps > 0 && var.network_out_target_gbps <= 200
    error_message = "network_out_target_gbps must be above 0 and at most 200, or null."
  }
}

variable "health_check_grace_period_seconds" {
  description = "Seconds after launch before the Auto Scaling Group acts on failed load balancer health checks (covers the user data installing egressd)."
  type        = number
  default     = 300
}

# ---------------------------------------------------------------------------
# Releases: what replaces running instances, and how
# ---------------------------------------------------------------------------

variable "release" {
  description = "Label of what the farm runs, for example the egressd version and the config revision (\"1.4.0-policy42\"). It is written into the launch template. Changing it is what replaces running instances: Terraform then runs rollout.sh, which refreshes one AZ's group at a time (checkpoints, automatic rollback on failed health checks or a firing unhealthy-targets alarm, instances already on the new template skipped) and stops at the first AZ that fails. Other changes to the launch template (AMI, instance type, package URI, user data settings) make a new template version that no running instance takes until the next release: nothing is replaced by accident. Policy changes need no release: the instances re-pull the config every policy_sync_interval_seconds."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", var.release))
    error_message = "release must be 1 to 64 letters, digits, dots, underscores, plus or minus signs, starting with a letter or digit."
  }
}

variable "instance_refresh_on_apply" {
  description = "Run the rollout (rollout.sh, with the AWS CLI v2 and the credentials of the machine running Terraform) when release changes. false: Terraform only records the new launch template version and the output rollout_command prints the command to run, for example from a deployment pipeline."
  type        = bool
  default     = true
}

variable "instance_refresh_min_healthy_percentage" {
  description = "Share of a group's desired capacity that must stay healthy during its instance refresh. 100 (default) with instance_refresh_max_healthy_percentage above 100 launches each replacement before the instance it replaces drains."
  type        = number
  default     = 100

  validation {
    condition     = var.instance_refresh_min_healthy_percentage >= 50 && var.instance_refresh_min_healthy_percentage <= 100
    error_message = "instance_refresh_min_healthy_percentage must be between 50 and 100: a refresh must never take an AZ below half its capacity."
  }
}

variable "instance_refresh_max_healthy_percentage" {
  description = "Ceiling of a group's capacity during its instance refresh, as a share of its desired capacity (100 to 200, at most 100 above the minimum). 150: up to half the group again is launched ahead of the instances it replaces."
  type        = number
  default     = 150

  validation {
    condition     = var.instance_refresh_max_healthy_percentage >= 100 && var.instance_refresh_max_healthy_percentage <= 200
    error_message = "instance_refresh_max_healthy_percentage must be between 100 and 200."
  }
}

variable "instance_refresh_checkpoint_percentages" {
  description = "Points of each AZ's refresh (percentage of the group replaced) at which it pauses for instance_refresh_checkpoint_delay_seconds, so that the new instances serve real traffic and the alarms can fire before the rest of the AZ follows. Strictly increasing, ending at 100."
  type        = list(number)
  default     = [50, 100]

  validation {
    condition = length(var.instance_refresh_checkpoint_percentages) > 0 && alltrue([
      for i, p in var.instance_refresh_checkpoint_percentages :
      p >= 1 && p <= 100 && (i == 0 ? true : p > var.instance_refresh_checkpoint_percentages[i - 1])
    ]) && var.instance_refresh_checkpoint_percentages[length(var.instance_refresh_checkpoint_percentages) - 1] == 100
    error_message = "instance_refresh_checkpoint_percentages must be strictly increasing percentages ending at 100."
  }
}

variable "instance_refresh_checkpoint_delay_seconds" {
  description = "Seconds each checkpoint waits (bake time) before the refresh continues, and before the next AZ starts after the last checkpoint."
  type        = number
  default     = 300

  validation {
    condition     = var.instance_refresh_checkpoint_delay_seconds >= 60 && var.instance_refresh_checkpoint_delay_seconds <= 172800
    error_message = "instance_refresh_checkpoint_delay_seconds must be between 60 and 172800."
  }
}

variable "instance_refresh_timeout_seconds" {
  description = "How long rollout.sh waits for one AZ's refresh to finish before it asks for a rollback of that AZ and fails."
  type        = number
  default     = 7200

  validation {
    condition     = var.instance_refresh_timeout_seconds >= 600
    error_message = "instance_refresh_timeout_seconds must be at least 600."
  }
}

# ---------------------------------------------------------------------------
# Access to the instances and IAM
# ---------------------------------------------------------------------------

variable "enable_ssm" {
  description = "Attach AmazonSSMManagedInstanceCore to the instances' role and install the SSM agent if the image lacks it, for Session Manager shells without SSH or an open port. Off by default: a proxy instance needs no interactive access."
  type        = bool
  default     = false
}

variable "iam_permissions_boundary_arn" {
  description = "ARN of an IAM policy set as the permissions boundary of the instances' role, when the organisation requires one on every role. null: none."
  type        = string
  default     = null

  validation {
    condition     = var.iam_permissions_boundary_arn == null ? true : can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/.+$", var.iam_permissions_boundary_arn))
    error_message = "iam_permissions_boundary_arn must be an IAM policy ARN (arn:aws:iam::ACCOUNT:policy/NAME)."
  }
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

variable "package_sha256" {
  description = "SHA-256 of the .deb at package_s3_uri (64 hex digits, as in the SHA256SUMS that `make release` publishes). The user data refuses to install a package whose checksum differs. Set it, or package_sha256sums_s3_uri, or both (then both must agree); pinning it here keeps the expected checksum in your reviewed Terraform rather than in the bucket beside the package."
  type        = string
  default     = null

  validation {
    condition     = var.package_sha256 == null ? true : can(regex("^[0-9a-f]{64}$", var.package_sha256))
    error_message = "package_sha256 must be 64 lower-case hex digits."
  }
}

variable "package_sha256sums_s3_uri" {
  description = "s3://bucket/key of the SHA256SUMS file published with the package (`make release`). The user data looks up the .deb's file name in it and refuses to install on a mismatch or when the name is missing. The instance role may read this object too."
  type        = string
  default     = null

  validation {
    condition     = var.package_sha256sums_s3_uri == null ? true : startswith(var.package_sha256sums_s3_uri, "s3://") && length(split("/", trimprefix(var.package_sha256sums_s3_uri, "s3://"))) > 1
    error_message = "package_sha256sums_s3_uri must look like s3://bucket/path/SHA256SUMS."
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
# Logs and alarms
# ---------------------------------------------------------------------------

variable "ship_logs" {
  description = "Ship egressd's access log, its diagnostics and the boot log to CloudWatch Logs with the CloudWatch agent, configured by the user data: one log group per farm (/egressd/<name>), one stream per instance and file. The config must set log.access_file: /var/log/egressd/access.log (the example's egressd.yaml does; the package's logrotate config rotates it without losing a line); egressd's stderr goes to /var/log/egressd/egressd.log. The agent flushes every 5 seconds and stops after egressd, within the lifecycle hook's margin, so the logs of an instance survive its scale-in."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of the farm's log group in days (one of CloudWatch Logs' allowed values)."
  type        = number
  default     = 90

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "log_kms_key_arn" {
  description = "ARN of a KMS key that encrypts the farm's log group. null: CloudWatch Logs' own encryption. The key policy must allow the logs.<region>.amazonaws.com service principal for this log group."
  type        = string
  default     = null

  validation {
    condition     = var.log_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.log_kms_key_arn))
    error_message = "log_kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "cloudwatch_agent_package_s3_uri" {
  description = "s3://bucket/key of the CloudWatch agent .deb (amazon-cloudwatch-agent.deb of the instances' architecture) to install, for a pinned, reviewed copy; set cloudwatch_agent_sha256 with it. null: the latest agent from AWS's regional download bucket over HTTPS."
  type        = string
  default     = null

  validation {
    condition     = var.cloudwatch_agent_package_s3_uri == null ? true : startswith(var.cloudwatch_agent_package_s3_uri, "s3://") && endswith(var.cloudwatch_agent_package_s3_uri, ".deb")
    error_message = "cloudwatch_agent_package_s3_uri must look like s3://bucket/path/amazon-cloudwatch-agent.deb."
  }
}

variable "cloudwatch_agent_sha256" {
  description = "SHA-256 of the CloudWatch agent .deb; the user data refuses to install an agent whose checksum differs. null: not checked."
  type        = string
  default     = null

  validation {
    condition     = var.cloudwatch_agent_sha256 == null ? true : can(regex("^[0-9a-f]{64}$", var.cloudwatch_agent_sha256))
    error_message = "cloudwatch_agent_sha256 must be 64 lower-case hex digits."
  }
}

variable "alarm_actions" {
  description = "ARNs (SNS topics, for example) notified when one of the farm's CloudWatch alarms fires or recovers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.alarm_actions : startswith(a, "arn:")])
    error_message = "alarm_actions must list ARNs."
  }
}

variable "alarm_unhealthy_minutes" {
  description = "Minutes a proxy must fail its /readyz health check before the AZ's unhealthy-targets alarm fires (it also stops and rolls back that AZ's instance refresh)."
  type        = number
  default     = 3

  validation {
    condition     = var.alarm_unhealthy_minutes >= 1 && var.alarm_unhealthy_minutes <= 60
    error_message = "alarm_unhealthy_minutes must be between 1 and 60."
  }
}

variable "alarm_cpu_percent" {
  description = "Average CPU utilisation of an AZ's group, over 15 minutes, above which its CPU alarm fires (scaling should have kept it near cpu_target_percent)."
  type        = number
  default     = 85

  validation {
    condition     = var.alarm_cpu_percent > 0 && var.alarm_cpu_percent <= 100
    error_message = "alarm_cpu_percent must be between 0 and 100."
  }
}

variable "alarm_network_out_gbps" {
  description = "Average network output per instance of an AZ's group, in Gbit/s over 15 minutes, above which its network alarm fires. Set it near the instance type's baseline bandwidth (c7i.large: 0.781 Gbit/s): above it the instance lives on burst credits."
  type        = number
  default     = 0.7

  validation {
    condition     = var.alarm_network_out_gbps > 0 && var.alarm_network_out_gbps <= 200
    error_message = "alarm_network_out_gbps must be above 0 and at most 200."
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
