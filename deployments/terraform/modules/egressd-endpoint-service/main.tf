# The farm's NLB(s) as a PrivateLink endpoint service, for a central egress
# VPC. Spoke VPCs create an interface endpoint to service_name and point
# HTTP(S)_PROXY at its DNS name; their own subnets need no NAT and no route to
# the internet.
#
# Behind PrivateLink the proxies see the NLB's address, not the client's:
# run the farm with proxy_protocol_v2 = true and set listen.proxy_protocol and
# listen.trusted_proxies (the farm's output trusted_proxies) in the config, so
# that egressd logs and matches the real client address. Spoke CIDRs may
# overlap, so group rules by CIDR only make sense when they do not.

resource "aws_vpc_endpoint_service" "this" {
  acceptance_required        = var.acceptance_required
  network_load_balancer_arns = var.nlb_arns
  private_dns_name           = var.private_dns_name
  supported_ip_address_types = ["ipv4"]

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_vpc_endpoint_service_allowed_principal" "this" {
  for_each = toset(var.allowed_principals)

  vpc_endpoint_service_id = aws_vpc_endpoint_service.this.id
  principal_arn           = each.value
}
