# Example root module: a VPC laid out for egress control, with the egressd
# farm in it.
#
#   client subnets (per AZ)   route table: local + S3/DynamoDB gateway endpoints.
#                             No route to the internet: the only way out is egressd.
#   egress subnets (per AZ)   the proxies; 0.0.0.0/0 -> that AZ's NAT gateway.
#   public subnets (per AZ)   NAT gateways; 0.0.0.0/0 -> internet gateway.
#   flow logs                 every flow of the VPC to CloudWatch Logs, to audit
#                             that clients reach nothing but egressd and endpoints.

locals {
  az_index = { for i, az in var.availability_zones : az => i }

  client_cidrs = { for az, i in local.az_index : az => cidrsubnet(var.vpc_cidr, 4, i) }
  egress_cidrs = { for az, i in local.az_index : az => cidrsubnet(var.vpc_cidr, 8, 128 + i) }
  public_cidrs = { for az, i in local.az_index : az => cidrsubnet(var.vpc_cidr, 8, 144 + i) }

  nat_azs = var.single_nat_gateway ? [var.availability_zones[0]] : var.availability_zones
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = var.name }
}

# The default security group admits nothing; every instance gets its own.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

# ---------------------------------------------------------------------------
# Public subnets and NAT gateways (used only by the proxies)
# ---------------------------------------------------------------------------

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = var.name }
}

resource "aws_subnet" "public" {
  for_each = local.public_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  tags              = { Name = "${var.name}-public-${each.key}" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-public" }
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  for_each = aws_subnet.public

  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
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
# Egress subnets: the proxies, out through their AZ's NAT gateway
# ---------------------------------------------------------------------------

resource "aws_subnet" "egress" {
  for_each = local.egress_cidrs

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  tags              = { Name = "${var.name}-egress-${each.key}" }
}

resource "aws_route_table" "egress" {
  for_each = aws_subnet.egress

  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-egress-${each.key}" }
}

resource "aws_route" "egress_internet" {
  for_each = aws_route_table.egress

  route_table_id         = each.value.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.single_nat_gateway ? var.availability_zones[0] : each.key].id
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
  ami_id           = var.ami_id
  instance_type    = var.instance_type
  package_s3_uri   = var.package_s3_uri
  config_s3_uri    = var.config_s3_uri
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
