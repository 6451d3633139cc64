# egressd farm: per availability zone, an Auto Scaling Group of stateless
# egressd instances behind an internal Network Load Balancer.
#
#   clients (client_cidrs) --TCP 3128/1080--> internal NLB (node per AZ, cross-zone off)
#        --> per-AZ target groups/ASG instances --TCP 80/443 (egress_ports)--> internet
#
# The instances reach the internet by egress_mode: through the subnets' NAT
# gateway (nat_gateway), or through the internet gateway with a public
# address of their own (public_ip), or with an address claimed from this
# module's Elastic IP pool (elastic_ip). Their security group admits only the
# NLB and admin_cidrs in every mode.
#
# Draining on scale-in or instance refresh:
#   1. The ASG deregisters the instance: the NLB sends it no new connections and
#      keeps existing flows for deregistration_delay = drain_delay + drain.
#   2. The termination lifecycle hook holds the instance in Terminating:Wait for
#      drain_delay + drain + margin seconds. egressd-asg-drain.service on the
#      instance sees the IMDS target-lifecycle-state turn "Terminated" and stops
#      egressd: /readyz turns 503, the listeners close after drain_delay, and
#      in-flight work gets up to drain. The hook then times out with CONTINUE.
#   3. The NLB does not cut flows to an unhealthy (draining) target: the target
#      groups disable unhealthy connection termination.
#
# Releases: the groups keep the launch template version they run until
# var.release changes; then rollout.sh refreshes one AZ's group at a time
# (see terraform_data.rollout).

data "aws_partition" "current" {}

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_subnet" "proxy" {
  for_each = var.subnet_ids_by_az

  id = each.value
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

  # Seconds from SIGTERM until egressd has exited: /readyz is 503 for
  # drain_delay, then in-flight work gets up to drain.
  stop_seconds = var.drain_delay_seconds + var.drain_seconds

  # The lifecycle hook must outlast the whole drain.
  lifecycle_heartbeat_seconds = local.stop_seconds + var.lifecycle_hook_margin_seconds

  # systemd's TimeoutStopSec for egressd.service: longer than egressd's own
  # deadline so that systemd never SIGKILLs a drain that is on time.
  systemd_stop_timeout_seconds = local.stop_seconds + 15

  s3_region = coalesce(var.s3_region, local.region)

  # The only objects the instance role may read.
  s3_object_uris = compact([var.package_s3_uri, var.config_s3_uri, var.package_sha256sums_s3_uri, var.cloudwatch_agent_package_s3_uri])
  s3_object_arns = [for uri in local.s3_object_uris : "arn:${local.partition}:s3:::${trimprefix(uri, "s3://")}"]

  # Listener name => port, for the NLB listeners and target groups.
  proxy_ports = {
    http   = var.http_port
    socks5 = var.socks5_port
  }

  # Ports the NLB reaches on the instances: the proxy ports, and the admin
  # port for the /readyz health checks.
  target_ports = merge(local.proxy_ports, { admin = var.admin_port })

  # Load balancer key => subnets. One shared NLB with a node per AZ, or one
  # NLB per AZ.
  lb_keys = var.nlb_per_az ? keys(var.subnet_ids_by_az) : ["shared"]
  lb_subnets = {
    for key in local.lb_keys :
    key => var.nlb_per_az ? [var.subnet_ids_by_az[key]] : values(var.subnet_ids_by_az)
  }

  # AZ => key of the load balancer that fronts that AZ's Auto Scaling Group.
  lb_for_az = { for az in keys(var.subnet_ids_by_az) : az => var.nlb_per_az ? az : "shared" }

  # "<lb>/<listener>" => target group / listener settings.
  target_groups = {
    for pair in setproduct(keys(local.lb_subnets), keys(local.proxy_ports)) :
    "${pair[0]}/${pair[1]}" => { lb = pair[0], listener = pair[1], port = local.proxy_ports[pair[1]] }
  }

  client_ingress = {
    for pair in setproduct(var.client_cidrs, keys(local.proxy_ports)) :
    "${pair[1]}|${pair[0]}" => { cidr = pair[0], listener = pair[1], port = local.proxy_ports[pair[1]] }
  }

  # Keyed by something known at plan time: the VPC's CIDR is not known
  # before the VPC exists, when the farm is created together with it.
  admin_ingress = var.admin_cidrs == null ? { vpc = data.aws_vpc.this.cidr_block } : { for cidr in var.admin_cidrs : cidr => cidr }

  egress_destinations = var.egress_ipv6 ? ["0.0.0.0/0", "::/0"] : ["0.0.0.0/0"]

  internet_egress = {
    for pair in setproduct(var.egress_ports, local.egress_destinations) :
    "${pair[0]}|${pair[1]}" => { port = pair[0], cidr = pair[1] }
  }

  dns_egress = {
    for pair in setproduct(var.dns_server_cidrs, ["udp", "tcp"]) :
    "${pair[1]}|${pair[0]}" => { cidr = pair[0], protocol = pair[1] }
  }

  # Egress: a public address per instance unless a NAT gateway does it.
  public_address = var.egress_mode != "nat_gateway"

  # The farm's tag on its instances and network interfaces, and the pool tag
  # on its Elastic IPs: the IAM conditions of the address claim match them.
  farm_tag_key = "egressd-farm"
  pool_tag_key = "egressd-pool"

  max_instances = var.instances_per_az.max * length(var.subnet_ids_by_az)
  eip_pool_size = var.egress_mode != "elastic_ip" ? 0 : coalesce(var.elastic_ip_pool_size, ceil(local.max_instances * 1.5))

  log_group_name = "/egressd/${var.name}"

  # CloudWatch agent: the access log (log.access_file), egressd's stderr
  # (diagnostics, sent to a file by the user data) and the boot log, one
  # stream per instance and file.
  cloudwatch_agent_config = jsonencode({
    agent = {
      run_as_user = "root"
    }
    logs = {
      force_flush_interval = 5
      logs_collected = {
        files = {
          collect_list = [
            for stream, path in {
              access    = "/var/log/egressd/access.log"
              egressd   = "/var/log/egressd/egressd.log"
              bootstrap = "/var/log/cloud-init-output.log"
              } : {
              file_path       = path
              log_group_name  = local.log_group_name
              log_stream_name = "{instance_id}/${stream}"
            }
          ]
        }
      }
    }
  })

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    release                      = var.release
    package_s3_uri               = var.package_s3_uri
    package_sha256               = var.package_sha256 == null ? "" : var.package_sha256
    package_sha256sums_s3_uri    = var.package_sha256sums_s3_uri == null ? "" : var.package_sha256sums_s3_uri
    config_s3_uri                = var.config_s3_uri
    s3_region                    = local.s3_region
    region                       = local.region
    policy_sync_interval_seconds = var.policy_sync_interval_seconds
    systemd_stop_timeout_seconds = local.systemd_stop_timeout_seconds
    admin_port                   = var.admin_port
    egress_mode                  = var.egress_mode
    eip_pool                     = var.name
    eip_pool_tag_key             = local.pool_tag_key
    eip_script                   = file("${path.module}/files/egressd-eip.sh")
    ship_logs                    = var.ship_logs
    cloudwatch_agent_config      = local.cloudwatch_agent_config
    cloudwatch_agent_s3_uri      = var.cloudwatch_agent_package_s3_uri == null ? "" : var.cloudwatch_agent_package_s3_uri
    cloudwatch_agent_sha256      = var.cloudwatch_agent_sha256 == null ? "" : var.cloudwatch_agent_sha256
    enable_ssm                   = var.enable_ssm
  })

  # One line per AZ, in AZ order, for rollout.sh: "<group> <preferences JSON>".
  # Each AZ's refresh rolls back when its unhealthy-targets alarm fires.
  rollout_plan_lines = [
    for az in sort(keys(var.subnet_ids_by_az)) : "${aws_autoscaling_group.this[az].name} ${jsonencode({
      MinHealthyPercentage      = var.instance_refresh_min_healthy_percentage
      MaxHealthyPercentage      = var.instance_refresh_max_healthy_percentage
      InstanceWarmup            = var.health_check_grace_period_seconds
      CheckpointPercentages     = var.instance_refresh_checkpoint_percentages
      CheckpointDelay           = var.instance_refresh_checkpoint_delay_seconds
      SkipMatching              = true
      AutoRollback              = true
      ScaleInProtectedInstances = "Refresh"
      StandbyInstances          = "Terminate"
      AlarmSpecification        = { Alarms = [aws_cloudwatch_metric_alarm.unhealthy_targets[az].alarm_name] }
    })}"
  ]
  rollout_plan = join("\n", local.rollout_plan_lines)

  rollout_environment = {
    AWS_REGION                       = local.region
    EGRESSD_ROLLOUT_TEMPLATE_ID      = aws_launch_template.this.id
    EGRESSD_ROLLOUT_TEMPLATE_VERSION = tostring(aws_launch_template.this.latest_version)
    EGRESSD_ROLLOUT_TIMEOUT_SECONDS  = tostring(var.instance_refresh_timeout_seconds)
    EGRESSD_ROLLOUT_PLAN             = local.rollout_plan
  }
}
# ---------------------------------------------------------------------------
# Security groups. No ingress rule anywhere admits 0.0.0.0/0 or ::/0.
# ---------------------------------------------------------------------------

resource "aws_security_group" "nlb" {
  name_prefix = "${var.name}-nlb-"
  description = "egressd NLB: proxy ports from client_cidrs only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nlb_from_clients" {
  for_each = local.client_ingress

  security_group_id = aws_security_group.nlb.id
  description       = "egressd ${each.value.listener} from clients"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_instances" {
  for_each = local.target_ports

  security_group_id            = aws_security_group.nlb.id
  description                  = "egressd ${each.key} port on the proxy instances"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.instance.id
}

resource "aws_security_group" "instance" {
  name_prefix = "${var.name}-instance-"
  description = "egressd instances: proxy and admin ports from the NLB, admin from admin_cidrs"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-instance" })

  lifecycle {
    create_before_destroy = true
  }
}

# Referencing the NLB's security group admits the NLB's traffic whether or not
# client IP preservation is on, and keeps clients from bypassing the NLB.
resource "aws_vpc_security_group_ingress_rule" "instance_from_nlb" {
  for_each = local.target_ports

  security_group_id            = aws_security_group.instance.id
  description                  = "egressd ${each.key} port from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "instance_admin" {
  for_each = local.admin_ingress

  security_group_id = aws_security_group.instance.id
  description       = "egressd admin port (metrics, health) from admin_cidrs"
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
  cidr_ipv4         = strcontains(each.value, ":") ? null : each.value
  cidr_ipv6         = strcontains(each.value, ":") ? each.value : null
}

# Egress to the internet on the allowed ports is the proxy's job.
resource "aws_vpc_security_group_egress_rule" "instance_internet" {
  for_each = local.internet_egress

  security_group_id = aws_security_group.instance.id
  description       = "proxied egress on TCP ${each.value.port}"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
}

resource "aws_vpc_security_group_egress_rule" "instance_dns" {
  for_each = local.dns_egress

  security_group_id = aws_security_group.instance.id
  description       = "DNS (${each.value.protocol}) to the servers in dns.servers"
  ip_protocol       = each.value.protocol
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = strcontains(each.value.cidr, ":") ? null : each.value.cidr
  cidr_ipv6         = strcontains(each.value.cidr, ":") ? each.value.cidr : null
}

# ---------------------------------------------------------------------------
# IAM: the instances may read the package, the config and the checksums;
# with elastic_ip, claim and release the pool's addresses; with ship_logs,
# write to the farm's log group; with enable_ssm, talk to Systems Manager.
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

resource "aws_iam_role" "instance" {
  name_prefix          = "${var.name}-"
  description          = "egressd proxy instances: read the egressd package and config objects"
  assume_role_policy   = data.aws_iam_policy_document.assume_ec2.json
  permissions_boundary = var.iam_permissions_boundary_arn
  tags                 = var.tags
}

resource "aws_iam_role_policy" "read_objects" {
  name   = "read-egressd-objects"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.read_objects.json
}

# The address claim (files/egressd-eip.sh): find a free address of the pool,
# associate it with this instance, disassociate it at shutdown. Addresses
# outside the pool and instances outside the farm are out of reach.
data "aws_iam_policy_document" "elastic_ip" {
  statement {
    sid    = "FindPoolAddresses"
    effect = "Allow"
    # DescribeAddresses has no resource-level permissions: it lists, it
    # changes nothing.
    actions   = ["ec2:DescribeAddresses"]
    resources = ["*"]
  }

  statement {
    sid       = "ClaimAndReleasePoolAddresses"
    effect    = "Allow"
    actions   = ["ec2:AssociateAddress", "ec2:DisassociateAddress"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:elastic-ip/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${local.pool_tag_key}"
      values   = [var.name]
    }
  }

  statement {
    sid     = "OnFarmInstancesOnly"
    effect  = "Allow"
    actions = ["ec2:AssociateAddress", "ec2:DisassociateAddress"]
    resources = [
      "arn:${local.partition}:ec2:${local.region}:${local.account_id}:instance/*",
      "arn:${local.partition}:ec2:${local.region}:${local.account_id}:network-interface/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${local.farm_tag_key}"
      values   = [var.name]
    }
  }
}

resource "aws_iam_role_policy" "elastic_ip" {
  count = var.egress_mode == "elastic_ip" ? 1 : 0

  name   = "claim-egress-address"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.elastic_ip.json
}

# The CloudWatch agent writes to the farm's log group only; the group itself
# is Terraform's (retention, KMS).
data "aws_iam_policy_document" "write_logs" {
  statement {
    sid       = "WriteFarmLogGroup"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}:*"]
  }
}

resource "aws_iam_role_policy" "write_logs" {
  count = var.ship_logs ? 1 : 0

  name   = "write-farm-logs"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.write_logs.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  count = var.enable_ssm ? 1 : 0

  role       = aws_iam_role.instance.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "instance" {
  name_prefix = "${var.name}-"
  role        = aws_iam_role.instance.name
  tags        = var.tags
}

# ---------------------------------------------------------------------------
# Egress addresses (egress_mode = "elastic_ip") and the log group
# ---------------------------------------------------------------------------

# Partners allowlist these addresses (output egress_public_ips). Each costs
# the public IPv4 hourly charge, in use or not.
resource "aws_eip" "pool" {
  count = local.eip_pool_size

  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-egress-${count.index}", (local.pool_tag_key) = var.name })

  lifecycle {
    precondition {
      condition     = local.eip_pool_size >= local.max_instances
      error_message = "elastic_ip_pool_size must be at least the sum of instances_per_az.max: every instance needs an address."
    }
  }
}

resource "aws_cloudwatch_log_group" "this" {
  count = var.ship_logs ? 1 : 0

  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

# ---------------------------------------------------------------------------
# Launch template and one Auto Scaling Group per AZ
# ---------------------------------------------------------------------------

resource "aws_launch_template" "this" {
  name_prefix            = "${var.name}-"
  description            = "egressd proxy instance, release ${var.release}"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  # gzip: EC2 takes 16 KiB of user data; cloud-init unpacks it.
  user_data = base64gzip(local.user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.instance.arn
  }

  # The security group sits on the interface: the launch template decides
  # whether the instance gets a public address (egress_mode).
  network_interfaces {
    device_index                = 0
    security_groups             = [aws_security_group.instance.id]
    associate_public_ip_address = local.public_address
    ipv6_address_count          = var.egress_ipv6 ? 1 : null
    delete_on_termination       = true
  }

  # IMDSv2 only, and not reachable from containers on the host (hop limit 1).
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
      condition     = var.cloudwatch_agent_package_s3_uri == null || var.cloudwatch_agent_sha256 != null
      error_message = "cloudwatch_agent_package_s3_uri needs cloudwatch_agent_sha256: a pinned agent is one whose checksum is checked."
    }

    precondition {
      condition     = var.instance_refresh_max_healthy_percentage - var.instance_refresh_min_healthy_percentage <= 100
      error_message = "instance_refresh_max_healthy_percentage may be at most 100 above instance_refresh_min_healthy_percentage."
    }
  }
}

resource "aws_autoscaling_group" "this" {
  # One group per AZ, so that each AZ scales, refreshes and fails on its own.
  for_each = var.subnet_ids_by_az

  name                      = "${var.name}-${each.key}"
  vpc_zone_identifier       = [each.value]
  min_size                  = var.instances_per_az.min
  max_size                  = var.instances_per_az.max
  desired_capacity          = var.instances_per_az.desired
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period_seconds
  default_instance_warmup   = 120
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]
  wait_for_capacity_timeout = "15m"
  target_group_arns         = [for listener in keys(local.proxy_ports) : aws_lb_target_group.this["${local.lb_for_az[each.key]}/${listener}"].arn]

  enabled_metrics = [
    "GroupDesiredCapacity",
    "GroupInServiceInstances",
    "GroupPendingInstances",
    "GroupTerminatingInstances",
    "GroupTotalInstances",
  ]

  # The version a group starts with. Later versions reach it only through
  # rollout.sh (a refresh with this version as its desired configuration,
  # which the group takes when the refresh succeeds), so that a failed refresh
  # can roll back to the version before it.
  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "${var.name}-${each.key}", (local.farm_tag_key) = var.name })

    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # desired_capacity is set at creation; afterwards scaling policies own it.
    # launch_template moves with releases (rollout.sh), not with every plan.
    ignore_changes = [desired_capacity, launch_template]
  }
}

# Termination waits for the drain: the instance stays in Terminating:Wait
# while egressd-asg-drain.service stops egressd, then the hook times out
# and termination continues. No IAM permission is needed for this.
resource "aws_autoscaling_lifecycle_hook" "drain" {
  for_each = aws_autoscaling_group.this

  name                   = "${var.name}-drain"
  autoscaling_group_name = each.value.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = local.lifecycle_heartbeat_seconds
  default_result         = "CONTINUE"

  lifecycle {
    precondition {
      condition     = local.lifecycle_heartbeat_seconds > local.stop_seconds && local.lifecycle_heartbeat_seconds <= 7200
      error_message = "The lifecycle hook heartbeat must exceed drain_delay_seconds + drain_seconds and be at most 7200 seconds."
    }
  }
}

resource "aws_autoscaling_policy" "cpu" {
  for_each = { for az, asg in aws_autoscaling_group.this : az => asg.name if var.cpu_target_percent != null }

  name                   = "${var.name}-cpu-target"
  autoscaling_group_name = each.value
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.cpu_target_percent

    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
  }
}

# Bandwidth runs out before CPU on small instances. ASGAverageNetworkOut is
# bytes per instance per metric period (1 minute with detailed monitoring,
# 5 without).
resource "aws_autoscaling_policy" "network_out" {
  for_each = { for az, asg in aws_autoscaling_group.this : az => asg.name if var.network_out_target_gbps != null }

  name                   = "${var.name}-network-out-target"
  autoscaling_group_name = each.value
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.network_out_target_gbps == null ? 0 : var.network_out_target_gbps * 1e9 / 8 * (var.detailed_monitoring ? 60 : 300)

    predefined_metric_specification {
      predefined_metric_type = "ASGAverageNetworkOut"
    }
  }
}

# A release (var.release) rolls out one AZ at a time: rollout.sh starts each
# group's instance refresh with the new launch template version as its desired
# configuration and waits for it to succeed before the next AZ; a failed
# refresh rolls back and stops the rollout (and this apply).
resource "terraform_data" "rollout" {
  count = var.instance_refresh_on_apply ? 1 : 0

  triggers_replace = [var.release]

  provisioner "local-exec" {
    command     = "sh '${path.module}/rollout.sh'"
    environment = local.rollout_environment
  }

  depends_on = [
    aws_autoscaling_lifecycle_hook.drain,
    aws_cloudwatch_metric_alarm.unhealthy_targets,
  ]
}

# ---------------------------------------------------------------------------
# Alarms: per AZ, unhealthy proxies (which also roll back that AZ's refresh),
# no healthy proxy, CPU and network output.
# ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  for_each = var.subnet_ids_by_az

  alarm_name          = "${var.name}-${each.key}-unhealthy-targets"
  alarm_description   = "egressd proxies in ${each.key} failing the /readyz health check for ${var.alarm_unhealthy_minutes} minutes (the HTTP and SOCKS5 target groups check the same instances)."
  namespace           = "AWS/NetworkELB"
  metric_name         = "UnHealthyHostCount"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = var.alarm_unhealthy_minutes
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  dimensions = {
    LoadBalancer     = aws_lb.this[local.lb_for_az[each.key]].arn_suffix
    TargetGroup      = aws_lb_target_group.this["${local.lb_for_az[each.key]}/http"].arn_suffix
    AvailabilityZone = each.key
  }
}

resource "aws_cloudwatch_metric_alarm" "no_healthy_targets" {
  for_each = var.subnet_ids_by_az

  alarm_name          = "${var.name}-${each.key}-no-healthy-targets"
  alarm_description   = "No healthy egressd proxy in ${each.key}: its clients fail over to other AZs through the NLB's DNS, or have no egress."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  dimensions = {
    LoadBalancer     = aws_lb.this[local.lb_for_az[each.key]].arn_suffix
    TargetGroup      = aws_lb_target_group.this["${local.lb_for_az[each.key]}/http"].arn_suffix
    AvailabilityZone = each.key
  }
}

resource "aws_cloudwatch_metric_alarm" "cpu" {
  for_each = aws_autoscaling_group.this

  alarm_name          = "${var.name}-${each.key}-cpu"
  alarm_description   = "Average CPU of the egressd group in ${each.key} above ${var.alarm_cpu_percent}% for 15 minutes: scaling is at its maximum or too slow."
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  threshold           = var.alarm_cpu_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  dimensions = {
    AutoScalingGroupName = each.value.name
  }
}

resource "aws_cloudwatch_metric_alarm" "network_out" {
  for_each = aws_autoscaling_group.this

  alarm_name          = "${var.name}-${each.key}-network-out"
  alarm_description   = "Average network output per egressd instance in ${each.key} above ${var.alarm_network_out_gbps} Gbit/s for 15 minutes: past the baseline bandwidth an instance spends burst credits."
  evaluation_periods  = 3
  threshold           = var.alarm_network_out_gbps
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  metric_query {
    id          = "gbps"
    expression  = "bytes * 8 / PERIOD(bytes) / 1000000000"
    label       = "Gbit/s out per instance"
    return_data = true
  }

  metric_query {
    id = "bytes"

    metric {
      namespace   = "AWS/EC2"
      metric_name = "NetworkOut"
      stat        = "Average"
      period      = 300
      dimensions = {
        AutoScalingGroupName = each.value.name
      }
    }
  }
}

# ---------------------------------------------------------------------------
# Internal Network Load Balancer(s), listeners and target groups
# ---------------------------------------------------------------------------

resource "aws_lb" "this" {
  for_each = local.lb_subnets

  name                             = var.nlb_per_az ? "${var.name}-${each.key}" : var.name
  internal                         = true
  load_balancer_type               = "network"
  ip_address_type                  = "ipv4"
  subnets                          = each.value
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = var.cross_zone_enabled
  dns_record_client_routing_policy = var.dns_client_routing_policy
  enable_deletion_protection       = var.deletion_protection

  enforce_security_group_inbound_rules_on_private_link_traffic = var.privatelink_inbound_rules_enforced ? "on" : "off"

  tags = merge(var.tags, { Name = var.nlb_per_az ? "${var.name}-${each.key}" : var.name })
}

resource "aws_lb_target_group" "this" {
  for_each = local.target_groups

  # No name: AWS names are limited to 32 characters and must be unique;
  # Terraform generates one, which also lets create_before_destroy work.
  port        = each.value.port
  protocol    = "TCP"
  target_type = "instance"
  vpc_id      = var.vpc_id

  # The NLB keeps existing flows to a deregistered proxy as long as egressd
  # itself keeps them: drain_delay (readyz 503) + drain (in-flight work).
  deregistration_delay = local.stop_seconds

  # PROXY v2 carries the client address (and the PrivateLink endpoint ID).
  # With it the source address is the NLB's, which egressd must trust.
  proxy_protocol_v2  = var.proxy_protocol_v2
  preserve_client_ip = !var.proxy_protocol_v2

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(var.admin_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = var.health_check_interval_seconds
    timeout             = 3
    healthy_threshold   = var.health_check_healthy_threshold
    unhealthy_threshold = var.health_check_unhealthy_threshold
  }

  # A draining egressd answers 503 on /readyz. By default an NLB would then
  # cut every established tunnel to it; keep them for the whole drain instead.
  target_health_state {
    enable_unhealthy_connection_termination = false
    unhealthy_draining_interval             = local.stop_seconds
  }

  tags = merge(var.tags, { Name = "${var.name}-${replace(each.key, "/", "-")}" })

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.drain_delay_seconds >= var.health_check_interval_seconds * var.health_check_unhealthy_threshold
      error_message = "drain_delay_seconds must be at least health_check_interval_seconds * health_check_unhealthy_threshold, or the NLB keeps sending new connections after egressd's listeners closed."
    }
  }
}

resource "aws_lb_listener" "this" {
  for_each = local.target_groups

  load_balancer_arn = aws_lb.this[each.value.lb].arn
  port              = each.value.port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[each.key].arn
  }

  tags = var.tags
}
