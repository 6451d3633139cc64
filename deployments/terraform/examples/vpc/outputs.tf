output "vpc_id" {
  description = "ID of the example VPC."
  value       = aws_vpc.this.id
}

output "client_subnet_ids" {
  description = "Client subnets (no route to the internet), keyed by AZ: launch client instances here with client_user_data."
  value       = { for az, subnet in aws_subnet.client : az => subnet.id }
}

output "egress_subnet_ids" {
  description = "Proxy subnets, keyed by AZ: 0.0.0.0/0 to the internet gateway (public_ip, elastic_ip) or a NAT gateway (nat_gateway)."
  value       = { for az, subnet in aws_subnet.egress : az => subnet.id }
}

output "proxy_url" {
  description = "HTTP(S)_PROXY value for clients: the private DNS name of the farm's NLB."
  value       = local.proxy_url
}

output "client_user_data" {
  description = "User data for client instances: deployments/client/user-data.sh with this VPC's settings."
  value       = local.client_user_data
}

output "egress_public_ips" {
  description = "With egress_mode elastic_ip: the addresses the farm's traffic comes from, for partners' allowlists."
  value       = module.egressd.egress_public_ips
}

output "farm_log_group" {
  description = "CloudWatch Logs group with the farm's access logs and diagnostics."
  value       = module.egressd.log_group_name
}

output "trusted_proxies" {
  description = "listen.trusted_proxies for the config when the farm runs with proxy_protocol_v2."
  value       = module.egressd.trusted_proxies
}

output "flow_log_group" {
  description = "CloudWatch Logs group with the VPC flow logs."
  value       = aws_cloudwatch_log_group.flow_logs.name
}
