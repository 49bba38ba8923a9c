"""DynamoGraphDeployment import and export: Kubernetes manifests of Dynamo's operator as recipes, and back."""
