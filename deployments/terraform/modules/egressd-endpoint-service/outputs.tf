output "service_name" {
  description = "Service name that spoke VPCs use in aws_vpc_endpoint (vpc_endpoint_type = \"Interface\")."
  value       = aws_vpc_endpoint_service.this.service_name
}

output "service_id" {
  description = "ID of the VPC endpoint service, for accepting connections and notifications."
  value       = aws_vpc_endpoint_service.this.id
}

output "availability_zones" {
  description = "AZs the service is available in; spoke endpoints can only be placed in subnets of these AZs (compare AZ IDs across accounts)."
  value       = aws_vpc_endpoint_service.this.availability_zones
}

output "private_dns_name_configuration" {
  description = "TXT record to publish to verify private_dns_name, when one is set."
  value       = aws_vpc_endpoint_service.this.private_dns_name_configuration
}
