# egressd in-line gateways: per availability zone, an Auto Scaling Group of
# gateway instances (one by default) that the client subnets' route tables
# point their default route at. Clients need no proxy settings.
#
#   client subnets (client_cidrs) --0.0.0.0/0 (and ::/0)--> the AZ's gateway's interface
#        gateway: nftables hands TCP on redirect_ports to egressd's transparent
#        listener (deployments/nftables), drops the rest; egressd decides
#        with the same policy as the proxy farm and dials the checked address
#        --TCP egress_ports--> internet (NAT gateway, or its own public address)
#
# Routing: egressd-route-takeover (files/) on every gateway points its AZ's
# client route tables at its own interface when it boots, takes over another
# AZ's tables when that AZ's gateway fails health_check_unhealthy_threshold
# /readyz checks in a row (or its interface is gone), hands its tables to a
# healthy peer when its group terminates it, and marks itself unhealthy
# when its own egressd never becomes ready. Its role may change routes in
# the client route tables only. docs/farm.md has the failover time.
#
# Releases: any change of the launch template (release, AMI, package) starts
# an instance refresh per AZ: the replacement launches beside the old
# gateway, which hands over its tables when it is terminated; a replacement
# that marks itself unhealthy rolls the refresh back.

data "aws_partition" "current" {}

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_ami" "this" {
  filter {
    name   = "image-id"
    values = [var.ami_id]
  }
}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  account_id = data.aws_caller_identity.current.account_id

  s3_region = coalesce(var.s3_region, local.region)

  # The only objects the gateways' role may read.
  s3_object_uris = compact([var.package_s3_uri, var.config_s3_uri, var.package_sha256sums_s3_uri])
  s3_object_arns = [for uri in local.s3_object_uris : "arn:${local.partition}:s3:::${trimprefix(uri, "s3://")}"]

  # The tag on the gateways' instances and interfaces: the role may turn off
  # the source/destination check only on interfaces that carry it, and
  # handoff finds its peers by it.
  farm_tag_key = "egressd-farm"

  # Every client route table, and the only ones whose routes the role may change.
  client_route_table_ids  = sort(distinct(flatten(values(var.client_route_table_ids_by_az))))
  client_route_table_arns = [for id in local.client_route_table_ids : "arn:${local.partition}:ec2:${local.region}:${local.account_id}:route-table/${id}"]

  # The takeover's plan, one entry per AZ: "AZ rtb-1 rtb-2;AZ rtb-3".
  route_plan = join(";", [for az in sort(keys(var.client_route_table_ids_by_az)) : join(" ", concat([az], var.client_route_table_ids_by_az[az]))])

  # The groups, by AZ; the role may report the health of these only.
  group_names = { for az in keys(var.subnet_ids_by_az) : az => "${var.name}-${az}" }
  group_arns  = [for az, name in local.group_names : "arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${name}"]

  # Worst case from a gateway's failure to the check that makes a peer take
  # its tables: threshold checks in a row, each at most interval + timeout
  # after the one before. The route change itself and its propagation add
  # a few seconds (docs/farm.md).
  failover_detection_seconds = var.health_check_unhealthy_threshold * (var.health_check_interval_seconds + var.health_check_timeout_seconds)

  # What the clients' traffic may bring to the gateways: the redirected TCP
  # ports, and UDP 443, which the gateways refuse at once (QUIC falls back
  # to TCP) instead of letting the security group drop it silently.
  client_ingress = merge(
    { for pair in setproduct(var.client_cidrs, var.redirect_ports) : "tcp/${pair[1]}|${pair[0]}" => { cidr = pair[0], protocol = "tcp", port = pair[1] } },
    { for cidr in var.client_cidrs : "udp/443|${cidr}" => { cidr = cidr, protocol = "udp", port = 443 } },
  )

  # Keyed by something known at plan time (the VPC CIDR is not, when the
  # VPC is created with the gateways).
  admin_ingress = var.admin_cidrs == null ? { vpc = data.aws_vpc.this.cidr_block } : { for cidr in var.admin_cidrs : cidr => cidr }

  egress_destinations = var.ipv6 ? ["0.0.0.0/0", "::/0"] : ["0.0.0.0/0"]
  internet_egress = {
    for pair in setproduct(var.egress_ports, local.egress_destinations) :
    "${pair[0]}|${pair[1]}" => { port = pair[0], cidr = pair[1] }
  }
  dns_egress = {
    for pair in setproduct(var.dns_server_cidrs, ["udp", "tcp"]) :
    "${pair[1]}|${pair[0]}" => { cidr = pair[0], protocol = pair[1] }
  }

  # /etc/default/egressd-transparent (deployments/nftables): the gateway's
  # packet rules.
  transparent_settings = join("\n", [
    "EGRESSD_CLIENT_CIDRS=\"${join(" ", var.client_cidrs)}\"",
    "EGRESSD_TRANSPARENT_PORT=${var.transparent_port}",
    "EGRESSD_REDIRECT_PORTS=\"${join(" ", var.redirect_ports)}\"",
    "EGRESSD_IPV4_MODE=${var.interception}",
    "EGRESSD_IPV6_MODE=${var.ipv6 ? var.interception : "off"}",
    "EGRESSD_DNS_RESOLVERS=",
  ])

  # /etc/default/egressd-route-takeover (files/egressd-route-takeover.sh).
  takeover_settings = join("\n", [
    "EGRESSD_ROUTE_PLAN=\"${local.route_plan}\"",
    "EGRESSD_ROUTE_IPV6=${var.ipv6}",
    "EGRESSD_FARM_NAME=${var.name}",
    "EGRESSD_FARM_TAG_KEY=${local.farm_tag_key}",
    "EGRESSD_ADMIN_PORT=${var.admin_port}",
    "EGRESSD_HEALTH_INTERVAL_SECONDS=${var.health_check_interval_seconds}",
    "EGRESSD_HEALTH_TIMEOUT_SECONDS=${var.health_check_timeout_seconds}",
    "EGRESSD_HEALTH_UNHEALTHY_THRESHOLD=${var.health_check_unhealthy_threshold}",
    "EGRESSD_SELF_GRACE_SECONDS=${var.health_check_grace_period_seconds}",
    "AWS_REGION=${local.region}",
    "AWS_DEFAULT_REGION=${local.region}",
  ])

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    release                      = var.release
    package_s3_uri               = var.package_s3_uri
    package_sha256               = var.package_sha256 == null ? "" : var.package_sha256
    package_sha256sums_s3_uri    = var.package_sha256sums_s3_uri == null ? "" : var.package_sha256sums_s3_uri
    config_s3_uri                = var.config_s3_uri
    s3_region                    = local.s3_region
    policy_sync_interval_seconds = var.policy_sync_interval_seconds
    admin_port                   = var.admin_port
    interception                 = var.interception
    transparent_settings         = local.transparent_settings
    takeover_settings            = local.takeover_settings
    takeover_script              = file("${path.module}/files/egressd-route-takeover.sh")
  })
}

# ---------------------------------------------------------------------------
# Security group. No ingress rule admits 0.0.0.0/0 or ::/0.
# ---------------------------------------------------------------------------

resource "aws_security_group" "gateway" {
  name_prefix = "${var.name}-gateway-"
  description = "egressd in-line gateways: client traffic on the redirected ports, admin port from the gateways and admin_cidrs"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-gateway" })

  lifecycle {
    create_before_destroy = true
  }
}

# A security group sees a routed packet with its original destination: these
# rules admit the clients' traffic to any address on the redirected ports.
resource "aws_vpc_security_group_ingress_rule" "from_clients" {
  for_each = local.client_ingress

  security_group_id = aws_security_group.gateway.id
  description       = "client ${upper(each.value.protocol)} ${each.value.port} routed through the gateway"
  ip_protocol       = each.value.protocol
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
}

resource "aws_vpc_security_group_ingress_rule" "admin_from_gateways" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "egressd admin port from the other gateways (route takeover health checks)"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_vpc_security_group_ingress_rule" "admin" {
  for_each = local.admin_ingress

  security_group_id = aws_security_group.gateway.id
  description       = "egressd admin port (metrics, health) from admin_cidrs"
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
  cidr_ipv4         = strcontains(each.value, ":") ? null : each.value
  cidr_ipv6         = strcontains(each.value, ":") ? each.value : null
}

# egressd's own connections, and the EC2 and S3 APIs (443).
resource "aws_vpc_security_group_egress_rule" "internet" {
  for_each = local.internet_egress

  security_group_id = aws_security_group.gateway.id
  description       = "egressd's egress on TCP ${each.value.port}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
}

resource "aws_vpc_security_group_egress_rule" "admin_to_gateways" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "route takeover health checks of the other gateways"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_vpc_security_group_egress_rule" "dns" {
  for_each = local.dns_egress

  security_group_id = aws_security_group.gateway.id
  description       = "DNS (${each.value.protocol}) to the servers in dns.servers"
  ip_protocol       = each.value.protocol
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
}

# ---------------------------------------------------------------------------
# IAM: read the package, config and checksums; the route takeover.
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    sid     = "EC2AssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "read_objects" {
  statement {
    sid       = "ReadEgressdPackageAndConfig"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = local.s3_object_arns
  }
}

# Describe calls take no resource-level permissions. Changing routes is
# allowed in the client route tables and nowhere else; the source/destination
# check may be turned off on the gateways' own interfaces only; a gateway
# reports its own health to the module's groups only.
data "aws_iam_policy_document" "route_takeover" {
  statement {
    sid       = "ReadRoutesAndGateways"
    effect    = "Allow"
    actions   = ["ec2:DescribeRouteTables", "ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }

  statement {
    sid       = "PointClientDefaultRoutes"
    effect    = "Allow"
    actions   = ["ec2:CreateRoute", "ec2:ReplaceRoute"]
    resources = local.client_route_table_arns
  }

  statement {
    sid       = "ForwardOnGatewayInterfaces"
    effect    = "Allow"
    actions   = ["ec2:ModifyNetworkInterfaceAttribute"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:network-interface/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${local.farm_tag_key}"
      values   = [var.name]
    }
  }

  statement {
    sid       = "ReportOwnHealth"
    effect    = "Allow"
    actions   = ["autoscaling:SetInstanceHealth"]
    resources = local.group_arns
  }
}

resource "aws_iam_role" "gateway" {
  name_prefix          = "${var.name}-"
  description          = "egressd in-line gateways: read the egressd package and config, point the client route tables at a healthy gateway"
  assume_role_policy   = data.aws_iam_policy_document.assume_ec2.json
  permissions_boundary = var.iam_permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_role_policy" "read_objects" {
  name   = "read-egressd-objects"
  role   = aws_iam_role.gateway.id
  policy = data.aws_iam_policy_document.read_objects.json
}

resource "aws_iam_role_policy" "route_takeover" {
  name   = "route-takeover"
  role   = aws_iam_role.gateway.id
  policy = data.aws_iam_policy_document.route_takeover.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  count = var.enable_ssm ? 1 : 0

  role       = aws_iam_role.gateway.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gateway" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.gateway.name
  tags        = var.tags
}

# ---------------------------------------------------------------------------
# Launch template and one Auto Scaling Group per AZ
# ---------------------------------------------------------------------------

resource "aws_launch_template" "this" {
  name_prefix            = "${var.name}-"
  description            = "egressd in-line gateway, release ${var.release}"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  # gzip: EC2 takes 16 KiB of user data; cloud-init unpacks it.
  user_data = base64gzip(local.user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.gateway.arn
  }

  # A launch template cannot turn the source/destination check off; the
  # route takeover does it at boot, on this interface.
  network_interfaces {
    device_index                = 0
    security_groups             = [aws_security_group.gateway.id]
    associate_public_ip_address = var.egress_mode == "public_ip"
    ipv6_address_count          = var.ipv6 ? 1 : null
    delete_on_termination       = true
  }

  # IMDSv2 only, not reachable from anything the gateway forwards (hop limit 1).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = var.detailed_monitoring
  }

  block_device_mappings {
    device_name = data.aws_ami.this.root_device_name

    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.ebs_kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = var.name, (local.farm_tag_key) = var.name, "egressd-release" = var.release })
  }

  tag_specifications {
    resource_type = "network-interface"
    tags          = merge(var.tags, { Name = var.name, (local.farm_tag_key) = var.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = var.name })
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.package_sha256 != null || var.package_sha256sums_s3_uri != null
      error_message = "Set package_sha256 or package_sha256sums_s3_uri: the user data installs only a package whose checksum it can check."
    }

    precondition {
      condition     = alltrue([for az in keys(var.client_route_table_ids_by_az) : contains(keys(var.subnet_ids_by_az), az)])
      error_message = "Every AZ of client_route_table_ids_by_az needs a gateway subnet in subnet_ids_by_az: each AZ's clients are served by a gateway of their AZ."
    }

    precondition {
      condition     = contains(var.egress_ports, 443)
      error_message = "egress_ports must include 443: the gateways reach the EC2 API and S3 over HTTPS."
    }

    precondition {
      condition     = var.health_check_timeout_seconds <= var.health_check_interval_seconds
      error_message = "health_check_timeout_seconds must not exceed health_check_interval_seconds."
    }
  }
}

resource "aws_autoscaling_group" "this" {
  # One group per AZ, so that each AZ's gateways are replaced on their own.
  for_each = var.subnet_ids_by_az

  name                = local.group_names[each.key]
  vpc_zone_identifier = [each.value]
  min_size            = var.gateways_per_az
  # Room for a refresh's replacements, launched before the gateways they replace go.
  max_size                  = 2 * var.gateways_per_az
  desired_capacity          = var.gateways_per_az
  health_check_type         = "EC2"
  health_check_grace_period = var.health_check_grace_period_seconds
  wait_for_capacity_timeout = "15m"

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # A new template version replaces the gateways one at a time, each
  # replacement launched (and ready, or marked unhealthy by itself) before
  # the gateway it replaces is terminated; an unhealthy replacement rolls
  # the refresh back.
  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
      instance_warmup        = var.health_check_grace_period_seconds
      skip_matching          = true
      auto_rollback          = true
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = local.group_names[each.key], (local.farm_tag_key) = var.name })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

# A terminated gateway is held while its route takeover sees the
# "Terminated" lifecycle state and hands its tables to a healthy peer.
resource "aws_autoscaling_lifecycle_hook" "handoff" {
  for_each = aws_autoscaling_group.this

  name                   = "${var.name}-handoff"
  autoscaling_group_name = each.value.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = var.handoff_seconds
  default_result         = "CONTINUE"
}
