//! Stand-ins for the engine calls a branch in flight brings (proxies and
//! domains), with their agreed signatures, so that the boxd
//! dialect builds before they land. Removed when they merge.

use super::*;

#[derive(Debug, Clone)]
pub struct Proxy {
    pub sandbox: Uuid,
    pub name: String,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct DomainBinding {
    pub domain: String,
    pub sandbox: Uuid,
    pub owner: String,
}

fn pending<T>(what: &str) -> Result<T> {
    Err(Error::Unsupported(what.to_string()))
}

impl Engine {
    pub fn proxies(&self, _p: &Principal, _id: Uuid) -> Result<Vec<Proxy>> {
        Ok(Vec::new())
    }
    pub async fn create_proxy(
        &self,
        _p: &Principal,
        _id: Uuid,
        _name: &str,
        _port: u16,
    ) -> Result<Proxy> {
        pending("proxies")
    }
    pub async fn delete_proxy(&self, _p: &Principal, _id: Uuid, _name: &str) -> Result<()> {
        pending("proxies")
    }
    pub async fn set_proxy_port(
        &self,
        _p: &Principal,
        id: Uuid,
        name: &str,
        port: u16,
    ) -> Result<Proxy> {
        Ok(Proxy {
            sandbox: id,
            name: name.into(),
            port,
        })
    }
    pub async fn bind_domain(
        &self,
        _p: &Principal,
        _domain: &str,
        _id: Uuid,
    ) -> Result<DomainBinding> {
        pending("domains")
    }
    pub async fn unbind_domain(&self, _p: &Principal, _domain: &str) -> Result<()> {
        pending("domains")
    }
    pub fn domains(&self, _p: &Principal) -> Result<Vec<DomainBinding>> {
        Ok(Vec::new())
    }
    pub fn proxy_host(&self, _sb: &Sandbox, _proxy: &str) -> Option<String> {
        None
    }
    pub fn ingress_url(&self, _sb: &Sandbox, _proxy: &str) -> Option<String> {
        None
    }
}
