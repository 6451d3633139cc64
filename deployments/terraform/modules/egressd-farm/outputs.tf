output "nlb_arns" {
  description = "ARNs of the internal NLB(s), keyed \"shared\" or by AZ when nlb_per_az is true. Pass them to the egressd-endpoint-service module to expose the farm over PrivateLink."
  value       = { for key, lb in aws_lb.this : key => lb.arn }
}

output "nlb_dns_names" {
  description = "DNS names of the internal NLB(s), keyed like nlb_arns. Clients use them as the proxy host."
  value       = { for key, lb in aws_lb.this : key => lb.dns_name }
}

output "nlb_zone_ids" {
  description = "Route 53 hosted zone IDs of the NLB(s), for alias records in a private hosted zone."
  value       = { for key, lb in aws_lb.this : key => lb.zone_id }
}

output "zonal_dns_names" {
  description = "Per-AZ DNS name of the proxy, keyed by AZ: the NLB's zonal name (<az>.<dns name>) for a shared NLB, or that AZ's own NLB. Clients that must stay in their AZ can use it instead of relying on DNS AZ affinity."
  value = {
    for az in keys(var.subnet_ids_by_az) :
    az => var.nlb_per_az ? aws_lb.this[az].dns_name : "${az}.${aws_lb.this["shared"].dns_name}"
  }
}

output "proxy_urls" {
  description = "Proxy URLs per NLB key: http for HTTP_PROXY/HTTPS_PROXY, socks5 (socks5h: the proxy resolves names) for SOCKS clients."
  value = {
    for key, lb in aws_lb.this : key => {
      http   = "http://${lb.dns_name}:${var.http_port}"
      socks5 = "socks5h://${lb.dns_name}:${var.socks5_port}"
    }
  }
}

output "target_group_arns" {
  description = "Target group ARNs keyed \"<nlb key>/<listener>\" (listener is http or socks5)."
  value       = { for key, tg in aws_lb_target_group.this : key => tg.arn }
}

output "autoscaling_group_names" {
  description = "Names of the per-AZ Auto Scaling Groups, keyed by AZ."
  value       = { for az, asg in aws_autoscaling_group.this : az => asg.name }
}

output "launch_template_id" {
  description = "ID of the launch template shared by the per-AZ groups; a new version triggers an instance refresh."
  value       = aws_launch_template.this.id
}

output "instance_security_group_id" {
  description = "Security group of the proxy instances."
  value       = aws_security_group.instance.id
}

output "nlb_security_group_id" {
  description = "Security group of the NLB(s): the only source the instances accept proxy traffic from."
  value       = aws_security_group.nlb.id
}

output "iam_role_name" {
  description = "Name of the instances' IAM role (s3:GetObject on the package and config objects only). Attach further policies, for example for SSM, outside this module."
  value       = aws_iam_role.instance.name
}

output "trusted_proxies" {
  description = "CIDRs of the proxy subnets, where the NLB's nodes live: the value of listen.trusted_proxies in the config when proxy_protocol_v2 is true."
  value       = [for az, subnet in data.aws_subnet.proxy : subnet.cidr_block]
}
