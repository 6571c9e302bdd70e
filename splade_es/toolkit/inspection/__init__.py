"""Making vectors readable: which terms come from the text and which are expansions
(CLI tables), and Kibana / OpenSearch Dashboards saved objects for an index."""
