# Example root module: a VPC laid out for egress control, with the egressd
# farm in it.
#
#   client subnets (per AZ)   route table: local + S3/DynamoDB gateway endpoints.
#                             No route to the internet: the only way out is egressd.
#   egress subnets (per AZ)   the proxies. egress_mode "public_ip" (default) or
#                             "elastic_ip": 0.0.0.0/0 -> internet gateway, each
#                             proxy with a public address; "nat_gateway":
#                             0.0.0.0/0 -> that AZ's NAT gateway. With
#                             enable_ipv6, ::/0 -> egress-only internet gateway.
#   public subnets (per AZ)   NAT gateways; only in egress_mode "nat_gateway".
#   flow logs                 every flow of the VPC to CloudWatch Logs, to audit
#                             that clients reach nothing but egressd and endpoints.

locals {
  az_index = { for i, az in var.availability_zones : az => i }

  client_cidrs = { for az, i in local.az_index : az => cidrsubnet(var.vpc_cidr, 4, i) }
  egress_cidrs = { for az, i in local.az_index : az => cidrsubnet(var.vpc_cidr, 8, 128 + i) }

  use_nat_gateway = var.egress_mode == "nat_gateway"

  # NAT gateways and their public subnets exist only in nat_gateway mode.
  nat_azs      = local.use_nat_gateway ? (var.single_nat_gateway ? [var.availability_zones[0]] : var.availability_zones) : []
  public_cidrs = { for az in local.nat_azs : az => cidrsubnet(var.vpc_cidr, 8, 144 + local.az_index[az]) }

  # AZs whose egress route table sends 0.0.0.0/0 to a NAT gateway, or to the
  # internet gateway; and ::/0 to the egress-only internet gateway.
  egress_via_nat_azs  = local.use_nat_gateway ? var.availability_zones : []
  egress_via_igw_azs  = local.use_nat_gateway ? [] : var.availability_zones
  egress_via_ipv6_azs = var.enable_ipv6 ? var.availability_zones : []
}

resource "aws_vpc" "this" {
  cidr_block                       = var.vpc_cidr
  enable_dns_support               = true
  enable_dns_hostnames             = true
  assign_generated_ipv6_cidr_block = var.enable_ipv6

  tags = { Name = var.name }
}

# The default security group admits nothing; every instance gets its own.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = var.name }
}

# Outbound-only IPv6 for the proxies: nothing on the internet can open a
# connection to them through it.
resource "aws_egress_only_internet_gateway" "this" {
  count = var.enable_ipv6 ? 1 : 0

  vpc_id = aws_vpc.this.id
  tags   = { Name = var.name }
}

# ---------------------------------------------------------------------------
# Public subnets and NAT gateways (egress_mode "nat_gateway" only)
# ---------------------------------------------------------------------------

resource "aws_subnet" "public" {
  for_each = local.public_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  tags              = { Name = "${var.name}-public-${each.key}" }
}

resource "aws_route_table" "public" {
  count = local.use_nat_gateway ? 1 : 0

  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-public" }
}

resource "aws_route" "public_internet" {
  count = local.use_nat_gateway ? 1 : 0

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  for_each = aws_subnet.public

  subnet_id      = each.value.id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_eip" "nat" {
  for_each = toset(local.nat_azs)

  domain = "vpc"
  tags   = { Name = "${var.name}-nat-${each.key}" }
}

resource "aws_nat_gateway" "this" {
  for_each = toset(local.nat_azs)

  allocation_id = aws_eip.nat[each.key].id
  subnet_id     = aws_subnet.public[each.key].id
  tags          = { Name = "${var.name}-${each.key}" }

  depends_on = [aws_internet_gateway.this]
}

# ---------------------------------------------------------------------------
# Egress subnets: the proxies
# ---------------------------------------------------------------------------

resource "aws_subnet" "egress" {
  for_each = local.egress_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value

  # With enable_ipv6, a /64 per AZ from the VPC's block, handed to the proxies.
  ipv6_cidr_block                 = var.enable_ipv6 ? cidrsubnet(aws_vpc.this.ipv6_cidr_block, 8, 128 + local.az_index[each.key]) : null
  assign_ipv6_address_on_creation = var.enable_ipv6

  tags = { Name = "${var.name}-egress-${each.key}" }
}

resource "aws_route_table" "egress" {
  for_each = aws_subnet.egress

  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-egress-${each.key}" }
}

# egress_mode "nat_gateway": out through the AZ's NAT gateway.
resource "aws_route" "egress_via_nat" {
  for_each = toset(local.egress_via_nat_azs)

  route_table_id         = aws_route_table.egress[each.key].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.single_nat_gateway ? var.availability_zones[0] : each.key].id
}

# egress_mode "public_ip" or "elastic_ip": the proxies' own public addresses,
# through the internet gateway. Their security group admits only the NLB and
# the admin CIDRs, so the addresses take no inbound connection.
resource "aws_route" "egress_via_igw" {
  for_each = toset(local.egress_via_igw_azs)

  route_table_id         = aws_route_table.egress[each.key].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route" "egress_ipv6" {
  for_each = toset(local.egress_via_ipv6_azs)

  route_table_id              = aws_route_table.egress[each.key].id
  destination_ipv6_cidr_block = "::/0"
  egress_only_gateway_id      = aws_egress_only_internet_gateway.this[0].id
}

resource "aws_route_table_association" "egress" {
  for_each = aws_subnet.egress

  subnet_id      = each.value.id
  route_table_id = aws_route_table.egress[each.key].id
}

# ---------------------------------------------------------------------------
# Client subnets: no route to the internet
# ---------------------------------------------------------------------------

resource "aws_subnet" "client" {
  for_each = local.client_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  tags              = { Name = "${var.name}-client-${each.key}" }
}

# Only the implicit local route and the gateway endpoints' prefix-list routes.
# Do not add a default route here: it would let clients bypass egressd.
resource "aws_route_table" "client" {
  for_each = aws_subnet.client

  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-client-${each.key}" }
}

resource "aws_route_table_association" "client" {
  for_each = aws_subnet.client

  subnet_id      = each.value.id
  route_table_id = aws_route_table.client[each.key].id
}

# S3 and DynamoDB through gateway endpoints: no proxy, no NAT charges. The
# proxies use them too, to fetch the egressd package and config.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = concat([for rt in aws_route_table.client : rt.id], [for rt in aws_route_table.egress : rt.id])
  policy            = var.s3_endpoint_policy
  tags              = { Name = "${var.name}-s3" }
}

resource "aws_vpc_endpoint" "dynamodb" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = concat([for rt in aws_route_table.client : rt.id], [for rt in aws_route_table.egress : rt.id])
  policy            = var.dynamodb_endpoint_policy
  tags              = { Name = "${var.name}-dynamodb" }
}

# ---------------------------------------------------------------------------
# VPC flow logs to CloudWatch Logs
# ---------------------------------------------------------------------------

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/vpc/${var.name}/flow-logs"
  retention_in_days = var.flow_log_retention_days
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }

    # Only flow logs of this account may use the role (confused deputy).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

data "aws_iam_policy_document" "flow_logs_write" {
  statement {
    effect = "Allow"
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogGroups",
      "logs:DescribeLogStreams",
    ]
    resources = [aws_cloudwatch_log_group.flow_logs.arn, "${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name_prefix        = "${var.name}-flow-logs-"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs_write.json
}

resource "aws_flow_log" "this" {
  vpc_id                   = aws_vpc.this.id
  traffic_type             = "ALL"
  log_destination_type     = "cloud-watch-logs"
  log_destination          = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn             = aws_iam_role.flow_logs.arn
  max_aggregation_interval = 60
  tags                     = { Name = var.name }
}

# ---------------------------------------------------------------------------
# The egressd farm
# ---------------------------------------------------------------------------

module "egressd" {
  source = "../../modules/egressd-farm"

  name             = var.name
  vpc_id           = aws_vpc.this.id
  subnet_ids_by_az = { for az, subnet in aws_subnet.egress : az => subnet.id }
  client_cidrs     = values(local.client_cidrs)
  egress_mode      = var.egress_mode
  egress_ipv6      = var.enable_ipv6
  ami_id           = var.ami_id
  instance_type    = var.instance_type
  release          = var.release
  package_s3_uri   = var.package_s3_uri
  package_sha256   = var.package_sha256
  config_s3_uri    = var.config_s3_uri
  alarm_actions    = var.alarm_actions
}

# proxy.<zone> for the clients' HTTP(S)_PROXY: a stable name, whatever the
# NLB is called.
resource "aws_route53_zone" "private" {
  name = var.private_zone_name

  vpc {
    vpc_id = aws_vpc.this.id
  }
}

resource "aws_route53_record" "proxy" {
  zone_id = aws_route53_zone.private.zone_id
  name    = "proxy.${var.private_zone_name}"
  type    = "A"

  alias {
    name                   = module.egressd.nlb_dns_names["shared"]
    zone_id                = module.egressd.nlb_zone_ids["shared"]
    evaluate_target_health = true
  }
}

locals {
  proxy_url = "http://proxy.${var.private_zone_name}:3128"

  # The client script reads its settings from the environment; prepend them.
  client_user_data = join("\n", [
    "#!/bin/sh",
    "# Settings for the egressd client script below (examples/vpc).",
    "export EGRESSD_PROXY_URL='${local.proxy_url}'",
    "export EGRESSD_VPC_CIDR='${var.vpc_cidr}'",
    "export EGRESSD_AWS_REGION='${var.region}'",
    "export EGRESSD_ENDPOINT_DNS_NAMES='${join(" ", var.endpoint_dns_names)}'",
    file("${path.module}/../../../client/user-data.sh"),
  ])
}
