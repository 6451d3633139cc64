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
  description = "ID of the launch template shared by the per-AZ groups."
  value       = aws_launch_template.this.id
}

output "launch_template_latest_version" {
  description = "Latest version of the launch template: what the next rollout brings. The groups run the version of the last release until a new release is rolled out."
  value       = aws_launch_template.this.latest_version
}

output "release" {
  description = "The release label written into the latest launch template version (var.release)."
  value       = var.release
}

output "rollout_command" {
  description = "Shell command that rolls the latest launch template version out one AZ at a time (what Terraform runs on a release change when instance_refresh_on_apply is true), for a pipeline that runs it itself. Needs the AWS CLI v2 and credentials allowed autoscaling:DescribeAutoScalingGroups, StartInstanceRefresh, DescribeInstanceRefreshes and RollbackInstanceRefresh."
  value = join(" ", concat(
    [for k, v in local.rollout_environment : "${k}='${v}'" if k != "EGRESSD_ROLLOUT_PLAN"],
    ["EGRESSD_ROLLOUT_PLAN=\"$(printf '%s\\n' ${join(" ", [for line in local.rollout_plan_lines : "'${line}'"])})\"", "sh '${abspath(path.module)}/rollout.sh'"],
  ))
}

output "iam_role_name" {
  description = "Name of the instances' IAM role: s3:GetObject on the package, config and checksum objects; the pool addresses' claim with egress_mode elastic_ip; writing to the farm's log group with ship_logs; AmazonSSMManagedInstanceCore with enable_ssm."
  value       = aws_iam_role.instance.name
}

output "egress_public_ips" {
  description = "The Elastic IP pool's addresses (egress_mode elastic_ip): every address the farm's traffic can come from, for partners' allowlists. Empty in the other modes, where the addresses are the NAT gateways' or change with each instance."
  value       = aws_eip.pool[*].public_ip
}

output "log_group_name" {
  description = "CloudWatch Logs group with the farm's access logs, diagnostics and boot logs (streams INSTANCE_ID/access, INSTANCE_ID/egressd and INSTANCE_ID/bootstrap); null when ship_logs is false."
  value       = var.ship_logs ? aws_cloudwatch_log_group.this[0].name : null
}

output "alarm_names" {
  description = "Names of the farm's CloudWatch alarms, by kind (unhealthy_targets, no_healthy_targets, cpu, network_out) and AZ."
  value = {
    unhealthy_targets  = { for az, a in aws_cloudwatch_metric_alarm.unhealthy_targets : az => a.alarm_name }
    no_healthy_targets = { for az, a in aws_cloudwatch_metric_alarm.no_healthy_targets : az => a.alarm_name }
    cpu                = { for az, a in aws_cloudwatch_metric_alarm.cpu : az => a.alarm_name }
    network_out        = { for az, a in aws_cloudwatch_metric_alarm.network_out : az => a.alarm_name }
  }
}

output "trusted_proxies" {
  description = "CIDRs of the proxy subnets, where the NLB's nodes live: the value of listen.trusted_proxies in the config when proxy_protocol_v2 is true."
  value       = [for az, subnet in data.aws_subnet.proxy : subnet.cidr_block]
}
