from cbi_service.cli import app

app(prog_name="cbi-service")
