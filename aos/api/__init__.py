"""The HTTP admin API's logic, independent of Azure Functions: handlers take an `ApiRequest`
and a Durable client and return an `ApiResponse`; `functions/admin.py` adapts them."""
