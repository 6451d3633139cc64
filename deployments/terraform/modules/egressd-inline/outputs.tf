output "autoscaling_group_names" {
  description = "Names of the per-AZ Auto Scaling Groups of gateways, keyed by AZ."
  value       = { for az, asg in aws_autoscaling_group.this : az => asg.name }
}

output "security_group_id" {
  description = "ID of the gateways' security group (clients' traffic on the redirected ports, admin port from the gateways and admin_cidrs)."
  value       = aws_security_group.gateway.id
}

output "iam_role_name" {
  description = "Name of the gateways' IAM role: s3:GetObject on the package, config and checksum objects; describe route tables and network interfaces; create and replace routes in the client route tables only; turn off the source/destination check on the gateways' interfaces; report a gateway's own health to its group."
  value       = aws_iam_role.gateway.name
}

output "launch_template_id" {
  description = "ID of the launch template shared by the per-AZ groups."
  value       = aws_launch_template.this.id
}

output "client_route_table_ids" {
  description = "The client route tables whose default routes the gateways own (sorted, without duplicates)."
  value       = local.client_route_table_ids
}

output "failover_detection_seconds" {
  description = "Worst-case seconds from a gateway's failure to the health check after which a healthy gateway takes over its route tables: health_check_unhealthy_threshold x (health_check_interval_seconds + health_check_timeout_seconds). The route change and its propagation add a few seconds; a terminated gateway's tables (blackhole routes) are taken at the next check."
  value       = local.failover_detection_seconds
}

output "transparent_settings" {
  description = "The /etc/default/egressd-transparent the user data writes on every gateway (the nftables rules' settings), for review."
  value       = local.transparent_settings
}
